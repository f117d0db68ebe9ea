"""How the uplink learns that something it ships has changed: a wake-up it awaits, never a poll.

:class:`Wakeup` is set by whoever writes (the secret service after a tracked commit, the audit
log after an append) and awaited by the one task that ships the change (the uplink's outbox or
audit sender). :class:`ChangeFeed` is the sink the secret service is given at construction:
it knows whether writes are tracked (the agent is enrolled) and wakes the outbox sender.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class Wakeup:
    """A one-waiter, thread-safe wake-up: :meth:`notify` from anywhere, :meth:`wait` on the loop."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def notify(self) -> None:
        """Wake the waiter (now, or as soon as it next waits)."""
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._event.set)

    def clear(self) -> None:
        """Forget earlier notifications; call before looking for work, then :meth:`wait`."""
        self._loop = asyncio.get_running_loop()
        self._event.clear()

    async def wait(self, timeout: float) -> None:
        """Until notified (since the last :meth:`clear`) or ``timeout`` seconds pass."""
        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


class ChangeFeed:
    """Tracked secret writes: whether to record them (the agent is enrolled) and whom to wake."""

    def __init__(self) -> None:
        self.tracking = False
        self.wakeup = Wakeup()
        self.listeners: list[Callable[[], None]] = []  # told of every commit (templates)

    def track(self) -> None:
        """Record inventory changes from now on (the uplink calls this once enrolled)."""
        self.tracking = True

    def committed(self) -> None:
        """A write that recorded a change has committed: wake the sender."""
        if self.tracking:
            self.wakeup.notify()
        for listener in self.listeners:
            listener()

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (cheap, thread-safe) after every committed write, enrolled or not;
        returns the function that stops it."""
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
