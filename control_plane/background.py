"""Small shared types for the control plane's services: the clock, and background tasks.

:class:`Background` owns this process's fire-and-forget tasks (webhooks, heartbeat writers,
policy pushes); services get its :meth:`Background.spawn` as a plain callable, and the runtime
cancels what is left at close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

Clock = Callable[[], datetime]
Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


class Background:
    """The set of this process's background tasks."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run a fire-and-forget coroutine that is cancelled at :meth:`close`."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Cancel every task still running and wait for them."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
