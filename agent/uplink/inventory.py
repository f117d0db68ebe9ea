"""Outbox rows into ``events`` of the ``outbox`` stream; inventory records built at send time.

An inventory marker holds only a secret id; the record is built from the secret's *current*
row when the batch is sent (latest state wins), with the name, description and labels sealed
under the organisation's metadata key -- or no label at all without a key. A plaintext name is
never put into an event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agent.crypto import utcnow
from agent.store.hot import SECRET_COLUMNS
from agent.store.sql import Connection, placeholders
from agent.uplink import outbox
from common.metadata_key import MetadataKey
from common.uplink import MAX_FRAME

FRAME_BUDGET = MAX_FRAME - 64 * 1024  # room for the frame's envelope


# a secret's row with its rotation schedule (our own constant column names)
_CURRENT = (
    f"SELECT {', '.join('s.' + c for c in SECRET_COLUMNS)}, r.policy_id, "  # noqa: S608
    "r.state AS rotation_state, r.last_rotated_at, r.next_due_at "
    "FROM kv_secrets s LEFT OUTER JOIN kv_rotation r ON r.secret_id = s.id "
)


def _secrets(conn: Connection, ids: Sequence[str]) -> dict[str, Any]:
    """Current rows of these secrets, by id (one query per 500 ids)."""
    found: dict[str, Any] = {}
    ids = list(ids)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        sql = _CURRENT + f"WHERE s.id IN ({placeholders(len(chunk))})"
        for row in conn.execute(sql, chunk).all():
            found[row.id] = row
    return found


def rotation(row: Any, now: str) -> dict[str, Any] | None:
    """The record's ``rotation`` (``{state, last_rotated_at, next_due_at}``), None if ungoverned."""
    policy_id = getattr(row, "policy_id", None)
    if policy_id is None:
        return None
    state = row.rotation_state
    if state not in ("pending", "failed"):
        state = "due" if row.next_due_at <= now else "ok"
    return {"state": state, "last_rotated_at": row.last_rotated_at, "next_due_at": row.next_due_at}


def record(row: Any, secret_id: str, vault_id: str, key: MetadataKey | None) -> dict[str, Any]:
    """The ``inventory`` data of one secret; ``row`` None means it was destroyed (version 0)."""
    if row is None:
        return {
            "secret_id": secret_id,
            "version": 0,
            "created_at": None,
            "updated_at": None,
            "deleted_at": None,
            "destroyed": True,
            "policy_id": None,
            "rotation": None,
            "label": None,
        }
    label = None
    if key is not None:
        fields = {
            "name": row.name,
            "description": row.description,
            "labels": json.loads(row.labels),
        }
        label = key.seal(vault_id, secret_id, fields)
    return {
        "secret_id": secret_id,
        "version": row.current_version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "deleted_at": row.deleted_at,
        "destroyed": False,
        "policy_id": getattr(row, "policy_id", None),
        "rotation": rotation(row, utcnow().isoformat()),
        "label": label,
    }


def events(
    conn: Connection, rows: Sequence[outbox.Row], vault_id: str, key: MetadataKey | None
) -> list[dict[str, Any]]:
    """The events for ``rows`` (in order), cut to fit one frame.

    Several markers of one secret in the batch collapse into its last one (the record is the
    current state anyway); the batch's last row always stays, so acknowledging the last event
    covers every row read.
    """
    last_marker: dict[str, int] = {}
    for row in rows:
        if row.kind == outbox.INVENTORY:
            last_marker[row.body["secret_id"]] = row.seq
    current = _secrets(conn, list(last_marker))
    out: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        if row.kind == outbox.INVENTORY:
            sid = row.body["secret_id"]
            if last_marker[sid] != row.seq:
                continue
            data = record(current.get(sid), sid, vault_id, key)
        else:
            data = row.body
        event = {"id": f"o{row.seq}", "seq": row.seq, "kind": row.kind, "at": row.created_at,
                 "data": data}  # fmt: skip
        size += len(json.dumps(event, separators=(",", ":"))) + 1
        if out and size > FRAME_BUDGET:
            break
        out.append(event)
    return out
