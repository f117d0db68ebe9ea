"""A long-running coroutine of the daemon (the uplink, the rotation scheduler): start, stop."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod


class Background(ABC):
    """Runs :meth:`run` as a task; :meth:`stop` sets ``_stopping`` and waits, then cancels."""

    task_name = "background"

    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self.run(), name=self.task_name)

    async def stop(self, timeout: float) -> None:
        """Ask :meth:`run` to return within ``timeout`` seconds; cancel it if it does not."""
        self._stopping.set()
        if self._task is None:
            return
        _, pending = await asyncio.wait({self._task}, timeout=timeout)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 1.0)

    @abstractmethod
    async def run(self) -> None:
        """The work; returns once ``_stopping`` is set, and never raises."""
