"""The ``audit`` stream: the local audit log tailed from the acknowledged cursor.

Entries name their target as the caller gave it -- an id or a *name*. Names are resolved to
opaque ids in one query per batch (a name with no secret becomes null), so no name is ever sent.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.audit import iter_entries
from agent.secrets import ID_RE
from agent.store.sql import Connection, placeholders
from common.uplink import audit_event_id

SECRET_OPS = "secrets."  # noqa: S105 - a route-name prefix, not a secret


def read(folder: Path, since: int, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` entries after ``since`` (blocking: call it in a thread)."""
    return list(itertools.islice(iter_entries(folder, since_seq=since), limit))


def _names(entries: Sequence[dict[str, Any]]) -> set[str]:
    out = set()
    for entry in entries:
        target = entry.get("target")
        if _about_secret(entry) and isinstance(target, str) and not ID_RE.fullmatch(target):
            out.add(target)
    return out


def _about_secret(entry: dict[str, Any]) -> bool:
    return str(entry.get("op", "")).startswith(SECRET_OPS)


def resolve(conn: Connection, entries: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Secret name -> id for the names that appear as targets (one query per 500 names)."""
    names = sorted(_names(entries))
    found: dict[str, str] = {}
    for start in range(0, len(names), 500):
        chunk = names[start : start + 500]
        sql = f"SELECT name, id FROM kv_secrets WHERE name IN ({placeholders(len(chunk))})"  # noqa: S608
        for name, sid in conn.execute(sql, chunk).fetchall():
            found[name] = sid
    return found


def has_entry(folder: Path, seq: int) -> bool:
    """Whether the log holds entry ``seq`` (blocking): a cursor past its end means the log is
    shorter than what was acknowledged."""
    for entry in iter_entries(folder, since_seq=seq - 1):
        return bool(entry["seq"] == seq)
    return False


def event(
    entry: dict[str, Any], ids: dict[str, str], epoch: int = 1, chain: int = 0
) -> dict[str, Any]:
    """The ``audit`` event of one entry; its target only as an opaque secret id (or null).

    An intent entry (``outcome: attempt``) has no HTTP status yet: its status is sent as null.
    The chain's ``epoch`` and the entry's chain ``mac`` let the control plane check that the
    vault's audit head only moves forward; ids are ``a<seq>`` in epoch 1 and
    ``a<epoch>.<seq>`` after it, so a new chain's ids never collide with the old one's.
    Worker k's log (``workers: N``) is chain k: its events carry ``data.chain = k`` and ids
    ``w<k>.a…``; chain 0's carry no ``chain`` (what older control planes accept).
    """
    target = entry.get("target")
    secret_id = None
    if _about_secret(entry) and isinstance(target, str):
        secret_id = target if ID_RE.fullmatch(target) else ids.get(target)
    actor, status = entry.get("actor"), entry.get("status")
    out: dict[str, Any] = {
        "id": audit_event_id(entry["seq"], epoch, chain),
        "seq": entry["seq"],
        "kind": "audit",
        "at": entry.get("time"),
        "data": {
            "op": entry.get("op"),
            "outcome": entry.get("outcome"),
            "status": status if type(status) is int and 100 <= status <= 599 else None,
            "actor": actor if isinstance(actor, str) else None,
            "secret_id": secret_id,
            "epoch": epoch,
            "mac": entry.get("mac"),
        },
    }
    if chain:
        out["data"]["chain"] = chain
    return out
