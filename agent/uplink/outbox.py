"""The durable outbox (``kv_outbox``): what waits to be sent, and the full resync.

Rows are written in the same transaction as the change they describe (inventory markers by
:class:`agent.secrets.SecretService`, command results by :mod:`.commands`, alerts by
:mod:`.health`) and deleted only after the control plane acknowledged them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.store.hot import INSERT_OUTBOX
from agent.store.sql import Connection
from agent.uplink import meta

INVENTORY = "inventory"
INVENTORY_SYNC = "inventory_sync"
COMMAND_RESULT = "command_result"
ALERT = "alert"


@dataclass(frozen=True)
class Row:
    """One outbox row."""

    seq: int
    kind: str
    body: dict[str, Any]
    created_at: str


def enqueue(conn: Connection, kind: str, data: dict[str, Any], now: str) -> None:
    """Add one row in the caller's transaction."""
    body = json.dumps(data, sort_keys=True, separators=(",", ":"))
    conn.execute(INSERT_OUTBOX, (kind, body, now))


def oldest(conn: Connection, limit: int) -> list[Row]:
    """The first ``limit`` rows in sequence order."""
    rows = conn.execute(
        "SELECT seq, kind, body, created_at FROM kv_outbox ORDER BY seq LIMIT ?", (limit,)
    ).fetchall()
    return [Row(int(seq), kind, json.loads(body), at) for seq, kind, body, at in rows]


def delete_upto(conn: Connection, seq: int) -> int:
    """Drop every row up to ``seq`` (acknowledged); returns how many."""
    return int(conn.execute("DELETE FROM kv_outbox WHERE seq <= ?", (seq,)).rowcount or 0)


def depth(conn: Connection) -> int:
    """How many rows wait."""
    return int(conn.execute("SELECT count(*) FROM kv_outbox").scalar_one())


def resync(now: str, vault_id: str | None = None) -> Callable[[Connection], int]:
    """A write: an inventory marker for every secret, then one ``inventory_sync`` listing them.

    Soft-deleted secrets count as live (their inventory carries ``deleted_at``); only destroyed
    ones are absent. With ``vault_id`` the vault is also recorded as synced (see
    :data:`meta.SYNCED_VAULT`). Returns the number of secrets.
    """

    def txn(conn: Connection) -> int:
        ids = conn.execute("SELECT id FROM kv_secrets ORDER BY id").scalars().all()
        if ids:
            rows = [(INVENTORY, json.dumps({"secret_id": i}), now) for i in ids]
            conn.executemany(INSERT_OUTBOX, rows)
        enqueue(conn, INVENTORY_SYNC, {"secret_ids": ids}, now)
        if vault_id is not None:
            meta.put(conn, meta.SYNCED_VAULT, vault_id)
        return len(ids)

    return txn
