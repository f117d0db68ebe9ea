"""The uplink's entries in ``kv_meta``: the audit cursor, the policies held, the synced vault."""

from __future__ import annotations

import json
from typing import Any

from agent.store.sql import Connection

AUDIT_CURSOR = "uplink.audit_cursor"  # {"vault_id", "seq"}: last audit seq the CP acknowledged
POLICIES = "uplink.policies"  # {"version", "policies"}: the list the CP sent last
SYNCED_VAULT = "uplink.synced_vault"  # the vault id a full resync was queued for
CHAIN_CURSOR = "uplink.audit_cursor.w"  # + k: {"vault_id", "epoch", "seq"} of worker k's chain


def get(conn: Connection, key: str) -> Any:
    """The JSON value stored under ``key``, or None."""
    raw = conn.execute("SELECT value FROM kv_meta WHERE key = ?", (key,)).scalar_one_or_none()
    return None if raw is None else json.loads(raw)


def put(conn: Connection, key: str, value: Any) -> None:
    """Store ``value`` (JSON) under ``key``."""
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"))
    done = conn.execute("UPDATE kv_meta SET value = ? WHERE key = ?", (raw, key))
    if done.rowcount == 0:
        conn.execute("INSERT INTO kv_meta (key, value) VALUES (?, ?)", (key, raw))


def audit_cursor(conn: Connection, vault_id: str) -> int:
    """The last audit seq acknowledged for ``vault_id`` (0 for a vault never synced)."""
    doc = get(conn, AUDIT_CURSOR)
    if isinstance(doc, dict) and doc.get("vault_id") == vault_id and type(doc.get("seq")) is int:
        return int(doc["seq"])
    return 0


def chain_cursor_key(chain: int) -> str:
    """The ``kv_meta`` key of worker ``chain``'s audit cursor (``workers: N``)."""
    return f"{CHAIN_CURSOR}{chain}"


def chain_cursor(conn: Connection, vault_id: str, chain: int) -> tuple[int, int]:
    """``(epoch, seq)`` last acknowledged on worker ``chain``'s audit chain for ``vault_id``
    (``(0, 0)`` when never synced). Kept while the worker is gone (its chain may come back)."""
    doc = get(conn, chain_cursor_key(chain))
    if (
        isinstance(doc, dict)
        and doc.get("vault_id") == vault_id
        and type(doc.get("epoch")) is int
        and type(doc.get("seq")) is int
    ):
        return int(doc["epoch"]), int(doc["seq"])
    return 0, 0
