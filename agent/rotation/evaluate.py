"""Policy evaluation in a child process: a hard time budget, and no share of the API's CPU.

Matching every policy against every name (:func:`agent.rotation.policy.assign`) is the one piece
of the agent's work whose size the control plane chooses. It runs in a single worker process at
the lowest scheduling priority, so the event loop never waits for it (no GIL shared, and the OS
prefers the API's threads), and a pass that runs past ``rotation.evaluation_budget_seconds`` is
ended by terminating the worker — a budget that holds even if matching itself misbehaved.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent import platform
from agent.rotation import policy as pol
from agent.rotation.planning import Planned, plan_from_store

if TYPE_CHECKING:  # multiprocessing is imported on first use: not by an idle agent (~1 MiB)
    from multiprocessing.pool import Pool


def _lower_priority() -> None:
    """Worker start-up: the lowest CPU priority the platform offers."""
    platform.lower_priority()


def _assign_indexes(
    policies: list[pol.Policy], names: str, labels: str, protected: list[str]
) -> bytes:
    """In the worker: for each name (``names`` and ``labels`` joined by newlines, which neither
    holds: one string crosses the pipe in one copy), its governing policy's index or -1, as
    packed 32-bit integers."""
    where = {p.id: i for i, p in enumerate(policies)}
    assigned = pol.assign(policies, names.split("\n"), labels.split("\n"), protected=protected)
    return array("i", [-1 if p is None else where[p.id] for p in assigned]).tobytes()


class Evaluator:
    """One worker process (started on first use) that assigns policies to secrets."""

    def __init__(self) -> None:
        self._pool: Pool | None = None

    def _worker(self) -> Pool:
        if self._pool is None:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(1, initializer=_lower_priority)
        return self._pool

    async def assign(
        self,
        policies: Sequence[pol.Policy],
        names: list[str],
        labels: list[str],
        protected: Sequence[str],
        budget: float,
    ) -> list[pol.Policy | None]:
        """Each secret's governing policy; BudgetExceededError (worker ended) past ``budget``."""
        if not policies or not names:
            return [None] * len(names)
        chosen = list(policies)
        args = (chosen, "\n".join(names), "\n".join(labels), list(protected))
        from multiprocessing import TimeoutError as WorkerTimeout  # imported on first use

        job = self._worker().apply_async(_assign_indexes, args)
        try:
            found = array("i", await asyncio.to_thread(job.get, budget))
        except WorkerTimeout:
            self.close()
            raise pol.BudgetExceededError(
                "evaluating the rotation policies took longer than "
                "rotation.evaluation_budget_seconds; the pass was stopped"
            ) from None
        return [None if i < 0 else chosen[i] for i in found]

    async def plan(
        self,
        url: str,
        vault_id: str | None,
        protected: Sequence[str],
        now: str,
        jitter: float,
        budget: float,
    ) -> Planned:
        """A whole pass's plan, read and computed in the worker
        (:func:`agent.rotation.planning.plan_from_store`); BudgetExceededError past ``budget``."""
        args = (url, vault_id, list(protected), now, jitter)
        from multiprocessing import TimeoutError as WorkerTimeout  # imported on first use

        job = self._worker().apply_async(plan_from_store, args)
        try:
            found: Planned = await asyncio.to_thread(job.get, budget)
        except WorkerTimeout:
            self.close()
            raise pol.BudgetExceededError(
                "evaluating the rotation policies took longer than "
                "rotation.evaluation_budget_seconds; the pass was stopped"
            ) from None
        return found

    def close(self) -> None:
        """End the worker process (a new one starts on the next use)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()
            pool.join()
