"""Rotation in the control plane (docs/rotation.md): agents' ``rotation`` events and the
overdue sweep.

* A ``rotation`` event updates the inventory row's ``rotation``/``policy_id`` and remembers its
  outbox ``seq`` (``rotation_seq``). An event older than the one applied last (a stale ``ok``
  arriving after a newer failure, e.g. from a replaced connection) is ignored; the same event
  again (a redelivered batch) re-runs its idempotent alert effects: ``failed`` raises
  ``rotation_failed:<vault>:<secret>`` (deduplicated by key), ``ok`` resolves it and
  ``rotation_overdue:<vault>:<secret>``. Outbox seqs only grow per vault (AUTOINCREMENT), so
  they order a secret's events better than the agents' clocks would.
* The overdue sweep reads metadata only (so it reports offline agents): for live inventory
  items whose policy still exists, due = ``rotation.next_due_at`` if reported (but not for a
  failed one: that is the agent's retry time), else (last rotation or creation) +
  ``interval_seconds``; ``due + notice_seconds < now`` raises
  ``rotation_overdue``; an open one whose item is no longer overdue (rotated, secret gone,
  policy deleted) is resolved. Three queries per sweep whatever the inventory's size.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from control_plane import schema as t
from control_plane.db import aware, insert_for, iso
from control_plane.services.agent_event import AgentEvent

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from control_plane.background import Clock
    from control_plane.coordination import SweepLock
    from control_plane.services.alerts import Alerts
    from control_plane.services.presence import VaultRef

log = logging.getLogger("keyvault.control_plane.rotation")
CHUNK = 500
FAILED = "rotation_failed"
OVERDUE = "rotation_overdue"


def failed_key(vault_id: str, secret_id: str) -> str:
    """The dedupe key of a secret's "rotation failed" alert."""
    return f"{FAILED}:{vault_id}:{secret_id}"


def overdue_key(vault_id: str, secret_id: str) -> str:
    """The dedupe key of a secret's "rotation overdue" alert."""
    return f"{OVERDUE}:{vault_id}:{secret_id}"


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def due_at(
    rotation: dict[str, Any] | None, created_at: datetime | None, interval_seconds: int
) -> datetime | None:
    """When a secret is due: the reported ``next_due_at``, else (last rotation or creation) +
    the policy's interval; None when nothing is known.

    After a failure the agent reports its *retry* time as ``next_due_at`` (backoff), which
    would push the due date on with every failed attempt; a failed secret is therefore due at
    (last rotation or creation) + interval, so a rotation that keeps failing becomes overdue.
    """
    rotation = rotation or {}
    reported = _time(rotation.get("next_due_at"))
    since = _time(rotation.get("last_rotated_at")) or aware(created_at)
    scheduled = None if since is None else since + timedelta(seconds=interval_seconds)
    if reported is not None and (rotation.get("state") != "failed" or scheduled is None):
        return reported
    return scheduled


class Rotations:
    """Applies ``rotation`` events and sweeps for overdue rotations."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        lock: SweepLock,
        alerts: Alerts,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.lock = lock
        self.alerts = alerts

    # ------------------------------------------------------------------ events
    async def apply(
        self, conn: Any, vault_id: str, events: list[AgentEvent], now: datetime
    ) -> list[dict[str, Any]]:
        """Apply a batch's ``rotation`` events in the caller's transaction (after its inventory
        events); returns the data of those whose alert effects are due (see the module doc).

        Only a secret's last rotation event of the batch counts. When an inventory or
        inventory_sync event follows it in the batch, that newer state of the row is kept (and
        a secret it removed is not brought back); only ``rotation_seq`` moves.
        """
        last: dict[str, AgentEvent] = {}
        superseded: set[str] = set()
        for e in events:
            if e.kind == "rotation":
                last[e.data["secret_id"]] = e
                superseded.discard(e.data["secret_id"])
            elif e.kind == "inventory":
                if e.data["secret_id"] in last:
                    superseded.add(e.data["secret_id"])
            elif e.kind == "inventory_sync":
                superseded.update(last)
        if not last:
            return []
        inv = t.inventory
        ids = sorted(last)
        existing: dict[str, Any] = {}
        for start in range(0, len(ids), CHUNK):
            q = sa.select(inv.c.secret_id, inv.c.policy_id, inv.c.rotation).where(
                inv.c.vault_id == vault_id, inv.c.secret_id.in_(ids[start : start + CHUNK])
            )
            existing.update({r.secret_id: r for r in await conn.execute(q)})
        rows: list[dict[str, Any]] = []
        for secret_id in ids:
            e, held = last[secret_id], existing.get(secret_id)
            if secret_id in superseded:
                if held is None:
                    continue
                rotation, policy_id = held.rotation, held.policy_id
            else:
                before = json.loads(held.rotation) if held is not None and held.rotation else {}
                rotation, policy_id = json.dumps(self._state(e.data, before)), e.data["policy_id"]
            rows.append(
                {
                    "vault_id": vault_id,
                    "secret_id": secret_id,
                    "version": e.data["version"],
                    "policy_id": policy_id,
                    "rotation": rotation,
                    "reported_at": now,
                    "rotation_seq": e.seq,
                }
            )
        applied: set[str] = set()
        for start in range(0, len(rows), CHUNK):
            ins = insert_for(self.engine, inv).values(rows[start : start + CHUNK])
            stmt = ins.on_conflict_do_update(
                index_elements=["vault_id", "secret_id"],
                set_={
                    c: getattr(ins.excluded, c)
                    for c in ("policy_id", "rotation", "reported_at", "rotation_seq")
                },
                where=sa.or_(
                    inv.c.rotation_seq.is_(None), inv.c.rotation_seq <= ins.excluded.rotation_seq
                ),
            ).returning(inv.c.secret_id)
            applied.update(r.secret_id for r in await conn.execute(stmt))
        return [last[s].data for s in ids if s in applied]

    @staticmethod
    def _state(data: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
        """The inventory's ``rotation`` after an event. A failure leaves the current value (and
        so the last rotation time) untouched; its ``next_due_at``, if any, is the agent's."""
        if data["outcome"] == "ok":
            return {
                "state": "ok",
                "last_rotated_at": data["rotated_at"],
                "next_due_at": data["next_due_at"],
            }
        return {
            "state": "failed",
            "last_rotated_at": before.get("last_rotated_at"),
            "next_due_at": data["next_due_at"] or before.get("next_due_at"),
        }

    async def effects(self, vault: VaultRef, results: list[dict[str, Any]]) -> None:
        """After the commit: raise or resolve the alerts of applied events (idempotent)."""
        resolve: list[str] = []
        for data in results:
            secret_id = data["secret_id"]
            if data["outcome"] == "failed":
                await self.alerts.raise_alert(
                    vault.org_id,
                    FAILED,
                    failed_key(vault.id, secret_id),
                    f"rotation of secret {secret_id} in vault {vault.id} (policy "
                    f"{data['policy_id'] or 'none'}) failed: {data['reason']}",
                    severity="warning",
                    vault_id=vault.id,
                )
            else:
                resolve += [failed_key(vault.id, secret_id), overdue_key(vault.id, secret_id)]
        await self.resolve_keys(vault.org_id, resolve)

    async def forget(self, vault: VaultRef, secret_ids: list[str]) -> None:
        """Resolve the rotation alerts of destroyed secrets."""
        keys = [k for s in secret_ids for k in (failed_key(vault.id, s), overdue_key(vault.id, s))]
        await self.resolve_keys(vault.org_id, keys)

    async def resolve_keys(self, org_id: str, keys: list[str]) -> int:
        """Resolve the live alerts among ``keys`` (one query to find them); returns how many."""
        a, found = t.alerts, []
        async with self.engine.connect() as conn:
            for start in range(0, len(keys), CHUNK):
                q = sa.select(a.c.open_key).where(
                    a.c.org_id == org_id, a.c.open_key.in_(keys[start : start + CHUNK])
                )
                found += [r.open_key for r in await conn.execute(q)]
        resolved = 0
        for key in found:
            resolved += await self.alerts.resolve_key(org_id, key) is not None
        return resolved

    # ------------------------------------------------------------------ overdue sweep
    async def sweep_overdue(self) -> int:
        """Raise ``rotation_overdue`` for overdue secrets and resolve those no longer overdue
        (one replica at a time); returns the number of new alerts."""
        async with self.lock.hold("keyvault.sweep.rotation") as mine:
            if not mine:
                return 0
            now = self.clock()
            inv, v, p, a = t.inventory, t.vaults, t.policies, t.alerts
            async with self.engine.connect() as conn:
                policies = {
                    r.id: (r.org_id, json.loads(r.body))
                    for r in await conn.execute(
                        sa.select(p.c.id, p.c.org_id, p.c.body).where(p.c.deleted_at.is_(None))
                    )
                }
                items = await conn.execute(
                    sa.select(
                        inv.c.vault_id,
                        inv.c.secret_id,
                        inv.c.policy_id,
                        inv.c.rotation,
                        inv.c.created_at,
                        v.c.org_id,
                    )
                    .join(v, v.c.id == inv.c.vault_id)
                    .where(
                        inv.c.policy_id.is_not(None),
                        inv.c.deleted_at.is_(None),
                        v.c.revoked_at.is_(None),
                    )
                )
                overdue: dict[tuple[str, str], tuple[str, str, str, datetime]] = {}
                for row in items:
                    policy = policies.get(row.policy_id)
                    if policy is None or policy[0] != row.org_id:
                        continue
                    body = policy[1]
                    rotation = json.loads(row.rotation) if row.rotation else None
                    due = due_at(rotation, row.created_at, int(body["interval_seconds"]))
                    notice = timedelta(seconds=int(body.get("notice_seconds") or 0))
                    if due is not None and due + notice < now:
                        key = overdue_key(row.vault_id, row.secret_id)
                        overdue[(row.org_id, key)] = (
                            row.vault_id,
                            row.secret_id,
                            row.policy_id,
                            due,
                        )
                live = {
                    (r.org_id, r.open_key)
                    for r in await conn.execute(
                        sa.select(a.c.org_id, a.c.open_key).where(
                            a.c.kind == OVERDUE, a.c.open_key.is_not(None)
                        )
                    )
                }
            raised = 0
            for (org_id, key), (vault_id, secret_id, policy_id, due) in overdue.items():
                if (org_id, key) in live:
                    continue
                _, new = await self.alerts.raise_alert(
                    org_id,
                    OVERDUE,
                    key,
                    f"secret {secret_id} in vault {vault_id} is overdue for rotation under "
                    f"policy {policy_id} (due {iso(due)})",
                    severity="warning",
                    vault_id=vault_id,
                )
                raised += new
            for org_id, key in sorted(live - set(overdue)):
                await self.alerts.resolve_key(org_id, key)
            return raised
