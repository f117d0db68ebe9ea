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
from typing import Any

from agent.background import Background
from agent.rotation import policy as pol
from agent.rotation.engine import PENDING, POLICIES_KEY, RotationEngine, RotationFailedError
from agent.rotation.evaluate import Evaluator
from agent.store.sql import Connection, placeholders
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
    governed_count: int = 0


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

        The reading and matching (every policy against every name) run in the evaluation
        worker process under ``rotation.evaluation_budget_seconds``
        (:mod:`agent.rotation.planning`); the event loop only awaits the small result.
        """
        raw, any_scheduled = await self.store.read(_policies_and_any)
        policies = self.engine.policies_from(raw)
        if not policies and not any_scheduled:
            return Plan()  # an agent without policies reads no secrets
        started = time.monotonic()
        now = self.engine.clock().isoformat()
        planned = await self.evaluator.plan(
            self.store.url, self.engine.vault_id(), self.settings.protected_names, now,
            self.settings.jitter_fraction, self.settings.evaluation_budget_seconds,
        )  # fmt: skip
        log.debug("rotation pass evaluated %d policies, %d secrets governed, in %.3f s",
                  len(policies), planned.governed, time.monotonic() - started)  # fmt: skip
        if planned.inserts or planned.changes or planned.dropped:
            await self.store.write(
                self._persist(planned.inserts, planned.changes, planned.dropped, now)
            )
        by_id = {p.id: p for p in self.engine.policies_from(raw)}
        plan = Plan(added=len(planned.inserts), changed=len(planned.changes),
                    dropped=len(planned.dropped), stale_pending=planned.stale_pending)  # fmt: skip
        plan.due = [sid for sid, pid in planned.due if pid in by_id]
        plan.governed = {sid: by_id[pid] for sid, pid in planned.due if pid in by_id}
        plan.governed_count = planned.governed
        return plan

    def _persist(
        self,
        inserts: list[dict[str, Any]],
        changes: list[dict[str, Any]],
        dropped: list[str],
        now: str,
    ) -> Callable[[Connection], None]:
        secrets = self.engine.secrets

        def txn(conn: Connection) -> None:
            if inserts:  # ON CONFLICT: SQLite >= 3.24 and PostgreSQL spell it the same
                conn.executemany(
                    "INSERT INTO kv_rotation (secret_id, policy_id, next_due_at, state, attempts) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (secret_id) DO NOTHING",
                    [
                        (
                            i["secret_id"],
                            i["policy_id"],
                            i["next_due_at"],
                            i["state"],
                            i["attempts"],
                        )
                        for i in inserts
                    ],
                )
            if changes:
                conn.executemany(
                    "UPDATE kv_rotation SET policy_id = ?, next_due_at = ? "
                    "WHERE secret_id = ? AND state != ?",
                    [(c["pid"], c["due"], c["sid"], PENDING) for c in changes],
                )
            for start in range(0, len(dropped), CHUNK):
                chunk = dropped[start : start + CHUNK]
                conn.execute(
                    f"DELETE FROM kv_rotation WHERE secret_id IN ({placeholders(len(chunk))}) "  # noqa: S608
                    "AND state != ?",
                    (*chunk, PENDING),
                )
            if secrets.track_changes:  # the inventory carries policy_id and the schedule
                for sid in [i["secret_id"] for i in inserts] + [c["sid"] for c in changes]:
                    secrets._changed(conn, sid, now)
                for sid in dropped:
                    secrets._changed(conn, sid, now)

        return txn


def _policies_and_any(conn: Connection) -> tuple[str | None, bool]:
    raw = conn.execute(
        "SELECT value FROM kv_meta WHERE key = ?", (POLICIES_KEY,)
    ).scalar_one_or_none()
    some = conn.execute("SELECT secret_id FROM kv_rotation LIMIT 1").first()
    return raw, some is not None
