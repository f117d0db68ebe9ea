"""The statements on the read and write hot paths, shared by several modules.

Every store statement is plain SQL text run by :meth:`agent.store.sql.Connection.execute`,
written once with ``?`` placeholders (turned into ``%s`` for psycopg); these are the ones whose
rows are read as :class:`SecretRow` tuples.
"""

from __future__ import annotations

from typing import NamedTuple


class SecretRow(NamedTuple):
    """A ``kv_secrets`` row, in column order."""

    id: str
    name: str
    current_version: int
    description: str
    labels: str
    created_at: str
    updated_at: str
    deleted_at: str | None
    mac: str | None = None  # the name binding's MAC (agent/rowauth.py)


SECRET_COLUMNS = SecretRow._fields


# Built from our own constant column names only; every value is a bound parameter.
_COLUMNS = ", ".join(SECRET_COLUMNS)
_SELECT = f"SELECT {_COLUMNS} FROM kv_secrets WHERE "  # noqa: S608
SECRET_BY_ID = _SELECT + "id = ?"
SECRET_BY_NAME = _SELECT + "name = ?"
INSERT_SECRET = (
    f"INSERT INTO kv_secrets ({_COLUMNS}) VALUES ({', '.join('?' * len(SECRET_COLUMNS))})"  # noqa: S608
)
UPDATE_SECRET = (
    "UPDATE kv_secrets SET current_version = ?, description = ?, labels = ?, updated_at = ?, "  # noqa: S105
    "deleted_at = ? WHERE id = ?"
)
INSERT_VERSION = (
    "INSERT INTO kv_versions (secret_id, version, kek_version, wrapped_dek, ciphertext, "
    "created_at, origin) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
VERSION_ROW = (
    "SELECT kek_version, wrapped_dek, ciphertext FROM kv_versions "
    "WHERE secret_id = ? AND version = ? AND state IS NULL"
)
INSERT_OUTBOX = "INSERT INTO kv_outbox (kind, body, created_at) VALUES (?, ?, ?)"
