"""How the uplink learns that something it ships has changed: a wake-up it awaits, never a poll.

:class:`Wakeup` is set by whoever writes (the secret service after a tracked commit, the audit
log after an append) and awaited by the one task that ships the change (the uplink's outbox or
audit sender). :class:`ChangeFeed` is the sink the secret service is given at construction:
it knows whether writes are tracked (the agent is enrolled) and wakes the outbox sender.

The feed also carries :class:`SecretChange` events (name, id, version, what happened; never a
value) to in-process subscribers: the change stream (``GET /api/v1/changes``), webhooks and
template rendering. :meth:`ChangeFeed.subscribe` gives each a bounded queue; one that falls
behind gets a single ``resync`` event in place of what it missed, and no writer ever waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from common.eventloop import running_loop

ChangeEvent = Literal["created", "updated", "rotated", "deleted", "destroyed", "resync"]
QUEUE_CAP = 1000  # events one subscriber may have waiting before it is told to resync


@dataclass(frozen=True)
class SecretChange:
    """One committed change to a secret: never its value.

    ``resync`` (name and id empty, version 0) means "you missed events: re-read everything
    you follow".
    """

    name: str
    id: str
    version: int
    event: ChangeEvent

    def to_json(self) -> dict[str, Any]:
        """The event as the change stream and webhooks carry it."""
        return {"name": self.name, "id": self.id, "version": self.version, "event": self.event}


RESYNC = SecretChange("", "", 0, "resync")


class Subscription:
    """One subscriber's bounded queue of :class:`SecretChange`; iterate it with ``async for``.

    Close it (``async with`` or :meth:`close`) when done so the feed stops feeding it.
    """

    def __init__(self, feed: ChangeFeed, cap: int) -> None:
        self._feed = feed
        self._queue: asyncio.Queue[SecretChange | None] = asyncio.Queue(maxsize=cap)
        self._ended = False
        self._loop = asyncio.get_running_loop()
        self.dropped = 0  # times the queue overflowed and was replaced by a resync

    def offer(self, change: SecretChange | None) -> None:
        """Queue ``change`` without waiting; on overflow drop the queue for one ``resync``.

        ``None`` ends the subscription (the agent is stopping)."""
        if running_loop() is not self._loop:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self.offer, change)
            return
        if self._ended:
            return
        if change is None:
            self._ended = True
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            self.dropped += 1
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC if change is not None else None)

    async def get(self) -> SecretChange | None:
        """The next change (waits for one); None once the subscription has ended."""
        if self._ended and self._queue.empty():
            return None
        return await self._queue.get()

    def close(self) -> None:
        """Stop receiving changes."""
        self._feed.unsubscribe(self)

    def __aiter__(self) -> AsyncIterator[SecretChange]:
        return self

    async def __anext__(self) -> SecretChange:
        change = await self.get()
        if change is None:
            raise StopAsyncIteration
        return change

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Wakeup:
    """A one-waiter, thread-safe wake-up: :meth:`notify` from anywhere, :meth:`wait` on the loop."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def notify(self) -> None:
        """Wake the waiter (now, or as soon as it next waits)."""
        loop = self._loop
        if loop is None or running_loop() is loop:
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
        self._subscribers: set[Subscription] = set()
        self.listeners: list[Callable[[], None]] = []  # told of every commit (templates)

    def track(self) -> None:
        """Record inventory changes from now on (the uplink calls this once enrolled)."""
        self.tracking = True

    def committed(self, change: SecretChange | None = None) -> None:
        """A write has committed: wake the sender (if tracking) and tell every subscriber."""
        if self.tracking:
            self.wakeup.notify()
        if change is not None:
            for sub in list(self._subscribers):
                sub.offer(change)
        for listener in self.listeners:
            listener()

    def subscribe(self, cap: int = QUEUE_CAP) -> Subscription:
        """A new subscription (on the running loop) to every change committed from now on."""
        sub = Subscription(self, cap)
        self._subscribers.add(sub)
        return sub

    def end_all(self) -> None:
        """End every subscription (the agent is stopping): their iterators finish."""
        for sub in list(self._subscribers):
            sub.offer(None)

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop feeding ``sub`` (idempotent)."""
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscribers)

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (cheap, thread-safe) after every committed write, enrolled or not;
        returns the function that stops it."""
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)
