"""The rotation scheduler: due dates per governed secret, and running what is due.

A pass (every ``rotation.scan_interval_seconds``, and right after a new policy list arrives)
evaluates every policy against every live secret in memory (one query for names and labels,
one for ``kv_rotation``), writes only what changed (new governed secrets get ``created_at +
interval ± jitter``; secrets no longer governed lose their row), then runs the due rotations one
at a time. Each is claimed with the lease ``UPDATE`` (:meth:`RotationEngine.claim`), so agent
replicas sharing one PostgreSQL store run every due rotation once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from agent.background import Background
from agent.rotation import policy as pol
from agent.rotation.engine import PENDING, POLICIES_KEY, RotationEngine, RotationFailedError
from agent.rotation.evaluate import Evaluator
from agent.store import hot
from agent.store import schema as t
from agent.uplink import outbox
from common.errors import KeyVaultError

log = logging.getLogger("keyvault.agent.rotation")
POLL = 0.5  # seconds between checks for a new policy list (memory only)
CHUNK = 500
SWITCH_INTERVAL = 0.001  # seconds a worker thread may hold the GIL before the loop gets it


@dataclass
class Plan:
    """What one pass found."""

    governed: dict[str, pol.Policy] = field(default_factory=dict)
    due: list[str] = field(default_factory=list)
    added: int = 0
    changed: int = 0
    dropped: int = 0
    stale_pending: int = 0


class Scheduler(Background):
    """Runs rotation passes in the background for one agent."""

    task_name = "rotation"

    def __init__(
        self,
        engine: RotationEngine,
        *,
        policies_version: Callable[[], str | None] = lambda: None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.store = engine.store
        self.settings = engine.settings
        self.policies_version = policies_version
        self.passes = 0
        self.rotated = 0
        self.failed = 0
        self._running: asyncio.Task[Any] | None = None
        self.alerted_budget = False
        self.evaluator = Evaluator()

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Recover, then a pass every scan interval or on a new policy list (never raises)."""
        # the plan's bookkeeping runs in worker threads: hand the GIL back to the event loop
        # often, so the local API answers within a few milliseconds while a pass runs
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        try:
            if await self.engine.recover():
                log.warning("reported rotations interrupted by the last stop as failed")
        except Exception:
            log.exception("rotation recovery failed; it is tried again at the next start")
        try:
            await self._passes()
        finally:
            await asyncio.to_thread(self.evaluator.close)

    async def _passes(self) -> None:
        """A pass every scan interval, or at once when a new policy list arrives."""
        seen = self.policies_version()
        while not self._stopping.is_set():
            try:
                await self.run_pass()
            except pol.BudgetExceededError as exc:
                log.warning("rotation pass skipped: %s", exc.message)
                await self._alert(exc.message)
            except KeyVaultError as exc:
                log.warning("rotation pass skipped: %s", exc.message)
            except Exception:
                log.exception("rotation pass failed; trying again")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.scan_interval_seconds
            while not self._stopping.is_set() and loop.time() < deadline:
                current = self.policies_version()
                if current != seen:
                    seen = current
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), min(POLL, max(0.0, deadline - loop.time()))
                    )

    async def _alert(self, message: str) -> None:
        """An ``intent_refused`` alert upstream (the policies cost more than the budget)."""
        if self.alerted_budget:
            return
        self.alerted_budget = True
        alert = {"kind": "intent_refused", "message": message}
        now = self.engine.clock().isoformat()
        await self.store.write(lambda c: outbox.enqueue(c, outbox.ALERT, alert, now))

    # ------------------------------------------------------------------ a pass
    async def run_pass(self) -> Plan:
        """Plan, then run what is due one at a time; returns the plan."""
        plan = await self.plan()
        self.passes += 1
        if plan.stale_pending:
            await self.engine.recover(at_start=False)
        for secret_id in plan.due:
            if self._stopping.is_set():
                break
            policy = plan.governed.get(secret_id)
            if policy is None or not await self.engine.claim(secret_id):
                continue  # another replica has it, or it is no longer due
            try:
                await self.engine.rotate(secret_id, policy, actor="scheduler", claimed=True)
                self.rotated += 1
            except RotationFailedError:
                self.failed += 1
            except KeyVaultError as exc:  # deleted meanwhile, a concurrent update, ...
                log.info("rotation of %s skipped: %s", secret_id, exc.message)
                await self.engine.release(secret_id)
        return plan

    async def plan(self) -> Plan:
        """Evaluate policies, persist due dates that changed, list what is due now.

        The evaluation (every policy against every name) runs in a worker thread under
        ``rotation.evaluation_budget_seconds``: the event loop only awaits it.
        """
        raw, any_scheduled = await self.store.read(_policies_and_any)
        policies = self.engine.policies_from(raw)
        if not policies and not any_scheduled:
            return Plan()  # an agent without policies reads no secrets
        started = time.monotonic()
        raw, secrets, schedule = await self.store.read(_snapshot)
        policies = self.engine.policies_from(raw)
        assigned = await self.evaluator.assign(
            policies, [s[1] for s in secrets], [s[2] for s in secrets],
            self.settings.protected_names, self.settings.evaluation_budget_seconds,
        )  # fmt: skip
        plan, inserts, changes, dropped, now = await asyncio.to_thread(
            self._evaluate, assigned, secrets, schedule
        )
        log.debug("rotation pass evaluated %d policies against %d secrets in %.3f s",
                  len(policies), len(secrets), time.monotonic() - started)  # fmt: skip
        if inserts or changes or dropped:
            await self.store.write(self._persist(inserts, changes, dropped, now))
        return plan

    def _evaluate(
        self, assigned: list[pol.Policy | None], secrets: list[Any], schedule: dict[str, Any]
    ) -> tuple[Plan, list[dict[str, Any]], list[dict[str, Any]], list[str], str]:
        """(plan, inserts, changes, dropped, now) from the assignment (in a worker thread)."""
        now = self.engine.clock().isoformat()
        ids = [s[0] for s in secrets]
        plan = Plan()
        inserts: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        due: list[tuple[str, str]] = []
        for i, policy in enumerate(assigned):
            if policy is None:
                continue
            sid = ids[i]
            plan.governed[sid] = policy
            row = schedule.pop(sid, None)
            if row is None:
                created = datetime.fromisoformat(secrets[i][3])
                next_due = self.engine.next_due(created, policy.interval_seconds).isoformat()
                inserts.append({"secret_id": sid, "policy_id": policy.id,
                                "next_due_at": next_due, "state": "scheduled",
                                "attempts": 0})  # fmt: skip
            else:
                next_due, state, lease_until, policy_id, last = row
                if state == PENDING:
                    if lease_until is None or lease_until < now:
                        plan.stale_pending += 1
                    continue
                if policy_id != policy.id:
                    base = datetime.fromisoformat(last or secrets[i][3])
                    next_due = self.engine.next_due(base, policy.interval_seconds).isoformat()
                    changes.append({"sid": sid, "pid": policy.id, "due": next_due})
            if next_due <= now:
                due.append((next_due, sid))
        dropped = [sid for sid, row in schedule.items() if row[1] != PENDING]
        plan.added, plan.changed, plan.dropped = len(inserts), len(changes), len(dropped)
        due.sort()
        plan.due = [sid for _, sid in due]
        return plan, inserts, changes, dropped, now

    def _persist(
        self,
        inserts: list[dict[str, Any]],
        changes: list[dict[str, Any]],
        dropped: list[str],
        now: str,
    ) -> Callable[[Connection], None]:
        secrets = self.engine.secrets

        def txn(conn: Connection) -> None:
            if inserts:
                dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
                stmt = dialect_insert(t.rotation).on_conflict_do_nothing(
                    index_elements=["secret_id"]
                )
                for start in range(0, len(inserts), CHUNK):
                    conn.execute(stmt, inserts[start : start + CHUNK])
            r = t.rotation.c
            if changes:
                conn.execute(
                    update(t.rotation)
                    .where(r.secret_id == bindparam("sid"), r.state != PENDING)
                    .values(policy_id=bindparam("pid"), next_due_at=bindparam("due")),
                    changes,
                )
            for start in range(0, len(dropped), CHUNK):
                conn.execute(
                    delete(t.rotation).where(
                        r.secret_id.in_(dropped[start : start + CHUNK]), r.state != PENDING
                    )
                )
            if secrets.track_changes:  # the inventory carries policy_id and the schedule
                for sid in [i["secret_id"] for i in inserts] + [c["sid"] for c in changes]:
                    secrets._changed(conn, sid, now)
                for sid in dropped:
                    secrets._changed(conn, sid, now)

        return txn


_SECRETS = hot.Statement(
    "SELECT id, name, labels, created_at FROM kv_secrets WHERE deleted_at IS NULL"
)
_SCHEDULE = hot.Statement(
    "SELECT secret_id, next_due_at, state, lease_until, policy_id, last_rotated_at FROM kv_rotation"
)


def _policies_and_any(conn: Connection) -> tuple[str | None, bool]:
    raw = conn.execute(
        select(t.meta.c.value).where(t.meta.c.key == POLICIES_KEY)
    ).scalar_one_or_none()
    some = conn.execute(select(t.rotation.c.secret_id).limit(1)).first()
    return raw, some is not None


def _snapshot(conn: Connection) -> tuple[str | None, list[Any], dict[str, tuple[Any, ...]]]:
    """The stored policy list, live secrets (id, name, labels, created_at) and the schedule.

    Plain DB-API cursors: SQLAlchemy's row objects would cost more than the evaluation itself.
    """
    raw = conn.execute(
        select(t.meta.c.value).where(t.meta.c.key == POLICIES_KEY)
    ).scalar_one_or_none()
    secrets = _SECRETS.run(conn, ()).fetchall()
    schedule = {row[0]: row[1:] for row in _SCHEDULE.run(conn, ()).fetchall()}
    return raw, secrets, schedule
