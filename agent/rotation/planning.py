"""One scheduler pass's plan, computed where it cannot slow the agent down.

:func:`plan_from_store` runs in the evaluation worker process (:mod:`agent.rotation.evaluate`):
it reads the held policies, every live secret and the schedule with its own connection, matches
policies to secrets (:func:`agent.rotation.policy.assign`) and works out what changed and what is
due. Only that small result crosses back to the agent, so the agent's own threads hold the GIL
for almost nothing however many secrets and however hostile the globs.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent.rotation import policy as pol
from agent.store.db import Store
from agent.store.sql import Connection

PENDING = "pending"
_SECRETS = "SELECT id, name, labels, created_at FROM kv_secrets WHERE deleted_at IS NULL"
_SCHEDULE = (
    "SELECT secret_id, next_due_at, state, lease_until, policy_id, last_rotated_at FROM kv_rotation"
)
_STORES: dict[str, Store] = {}  # one per store URL in the worker process (one reader)


@dataclass
class Planned:
    """What one pass found: due secrets with their policy ids, and the schedule's changes."""

    due: list[tuple[str, str]] = field(default_factory=list)
    governed: int = 0
    stale_pending: int = 0
    inserts: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def snapshot(conn: Connection) -> tuple[str | None, list[Any], dict[str, tuple[Any, ...]]]:
    """The stored policy list, live secrets (id, name, labels, created_at) and the schedule
    (plain DB-API cursors: row objects would cost more than the evaluation)."""
    raw = conn.execute(
        "SELECT value FROM kv_meta WHERE key = 'uplink.policies'"
    ).scalar_one_or_none()
    secrets = conn.execute(_SECRETS).fetchall()
    schedule = {row[0]: row[1:] for row in conn.execute(_SCHEDULE).fetchall()}
    return raw, secrets, schedule


def _next_due(base: datetime, interval: int, jitter: float) -> str:
    spread = jitter * interval
    return (base + timedelta(seconds=interval + random.uniform(-spread, spread))).isoformat()


def compute(
    raw: str | None, secrets: list[Any], schedule: dict[str, Any], *,
    vault_id: str | None, protected: list[str], now: str, jitter: float,
) -> Planned:  # fmt: skip
    """The plan for one snapshot (see :class:`Planned`)."""
    doc = json.loads(raw) if raw else None
    policies = pol.parse_all(doc.get("policies") if isinstance(doc, dict) else None, vault_id)
    assigned = pol.assign(policies, [s[1] for s in secrets], [s[2] for s in secrets],
                          protected=protected)  # fmt: skip
    out = Planned()
    due: list[tuple[str, str, str]] = []  # (next due, policy id, secret id)
    for i, policy in enumerate(assigned):
        if policy is None:
            continue
        sid, created = secrets[i][0], secrets[i][3]
        out.governed += 1
        row = schedule.pop(sid, None)
        if row is None:
            next_due = _next_due(datetime.fromisoformat(created), policy.interval_seconds, jitter)
            out.inserts.append({"secret_id": sid, "policy_id": policy.id,
                                "next_due_at": next_due, "state": "scheduled",
                                "attempts": 0})  # fmt: skip
        else:
            next_due, state, lease_until, policy_id, last = row
            if state == PENDING:
                if lease_until is None or lease_until < now:
                    out.stale_pending += 1
                continue
            if policy_id != policy.id:
                base = datetime.fromisoformat(last or created)
                next_due = _next_due(base, policy.interval_seconds, jitter)
                out.changes.append({"sid": sid, "pid": policy.id, "due": next_due})
        if next_due <= now:
            due.append((next_due, policy.id, sid))
    out.dropped = [sid for sid, row in schedule.items() if row[1] != PENDING]
    out.due = [(sid, pid) for _, pid, sid in sorted(due)]
    return out


def plan_from_store(
    url: str, vault_id: str | None, protected: list[str], now: str, jitter: float
) -> Planned:
    """In the worker: read the store (its own read-only use of it) and compute the plan."""
    store = _STORES.get(url)
    if store is None:
        store = _STORES[url] = Store(url, readers=1)
    raw, secrets, schedule = store.read_sync(snapshot)
    return compute(raw, secrets, schedule, vault_id=vault_id, protected=protected, now=now,
                   jitter=jitter)  # fmt: skip
