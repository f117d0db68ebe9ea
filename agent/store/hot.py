"""The few statements on the write hot path, run on the DB-API cursor under SQLAlchemy's transaction.

SQLAlchemy owns the engine, the pool, the transaction and the schema; only these fixed
statements skip its statement machinery, which cost about four times SQLite's own work per
write on the single writer thread (docs/performance.md, benchmark 2). Each is written once with
``?`` placeholders and turned into ``%s`` for psycopg.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection


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


class Statement:
    """One fixed SQL statement for both backends."""

    def __init__(self, sql: str) -> None:
        self.qmark = sql
        self.format = sql.replace("?", "%s")

    def run(self, conn: Connection, params: Sequence[Any]) -> Any:
        """Execute in ``conn``'s current transaction; returns the DB-API cursor."""
        raw = conn.connection.dbapi_connection
        assert raw is not None, "connection is closed"
        cursor = raw.cursor()
        cursor.execute(self.qmark if conn.dialect.paramstyle == "qmark" else self.format, params)
        return cursor


# Built from our own constant column names only; every value is a bound parameter.
_COLUMNS = ", ".join(SECRET_COLUMNS)
_SELECT = f"SELECT {_COLUMNS} FROM kv_secrets WHERE "  # noqa: S608
SECRET_BY_ID = Statement(_SELECT + "id = ?")
SECRET_BY_NAME = Statement(_SELECT + "name = ?")
INSERT_SECRET = Statement(
    f"INSERT INTO kv_secrets ({_COLUMNS}) VALUES ({', '.join('?' * len(SECRET_COLUMNS))})"  # noqa: S608
)
UPDATE_SECRET = Statement(
    "UPDATE kv_secrets SET current_version = ?, description = ?, labels = ?, updated_at = ?, "
    "deleted_at = ? WHERE id = ?"
)
INSERT_VERSION = Statement(
    "INSERT INTO kv_versions (secret_id, version, kek_version, wrapped_dek, ciphertext, "
    "created_at, origin) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
VERSION_ROW = Statement(
    "SELECT kek_version, wrapped_dek, ciphertext FROM kv_versions "
    "WHERE secret_id = ? AND version = ? AND state IS NULL"
)
INSERT_OUTBOX = Statement("INSERT INTO kv_outbox (kind, body, created_at) VALUES (?, ?, ?)")
