"""Long-running admin jobs (KEK rotation, rekey) that run online and report progress."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agent.crypto import Clock, utcnow
from common.errors import KeyVaultError, NotFoundError

log = logging.getLogger("keyvault.agent.jobs")
Progress = Callable[[int, int], None]


@dataclass
class Job:
    """One job's state, as polled by the CLI's progress bar."""

    id: str
    kind: str
    started_at: str
    state: str = "running"  # running | succeeded | failed
    done: int = 0
    total: int = 0
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    finished_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The job as the API shows it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "result": self.result,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class JobRunner:
    """Starts jobs as tasks and keeps the last 100 for polling."""

    def __init__(self, clock: Clock = utcnow) -> None:
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, kind: str, work: Callable[[Progress], Awaitable[dict[str, Any]]]) -> Job:
        """Run ``work(progress)`` in the background; returns the job at once."""
        job = Job(
            "job_" + base64.b32encode(os.urandom(10)).decode().lower(),
            kind,
            self._clock().isoformat(),
        )
        self._jobs[job.id] = job
        while len(self._jobs) > 100:
            self._jobs.pop(next(iter(self._jobs)))

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total

        async def run() -> None:
            try:
                job.result = await work(progress)
                job.state = "succeeded"
            except KeyVaultError as exc:
                job.state, job.error = "failed", exc.message
            except Exception as exc:
                log.exception("job %s (%s) failed", job.id, kind)
                job.state, job.error = (
                    "failed",
                    f"internal error ({type(exc).__name__}); see the agent log",
                )
            job.finished_at = self._clock().isoformat()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def get(self, job_id: str) -> Job:
        """A job by id, or 404."""
        try:
            return self._jobs[job_id]
        except KeyError:
            raise NotFoundError(f"no job {job_id!r}") from None

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for running jobs at shutdown, then cancel what is left.

        A cancelled KEK rotation is safe: the new KEK is active, the old one stays loaded until
        a later rotation has re-wrapped everything, and nothing is destroyed half-way.
        """
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1)
