"""The event bus that feeds operator streams: in-process, or Redis pub/sub across replicas.

An event is a JSON object ``{"type", "org_id", "at", "data"}``. :meth:`EventBus.publish` sends
it to every replica; each replica hands it to the local subscribers of that organisation only.
A subscriber may set a ``sink`` that takes an event synchronously (the operator stream writes
it straight to its socket); when there is none, or it declines, or events are already waiting,
the event goes to the subscriber's bounded queue, so order is kept. One that falls too far behind
is closed rather than allowed to grow without limit.

The bus also carries *uplink routes* (``{"vault_id", …}``: a command for an agent, or an order
to close its socket) on a second channel: :meth:`EventBus.route` sends one to every replica, and
each hands it to its ``route_handler`` (the replica's uplink hub), which acts only if it holds
that vault's socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from common import events
from control_plane.metrics import Metrics

log = logging.getLogger("keyvault.control_plane.bus")
QUEUE_SIZE = 1000
Event = dict[str, Any]
RouteHandler = Callable[[dict[str, Any]], None]


class Subscription:
    """One listener's queue of its organisation's events; ``closed`` once it overflowed."""

    def __init__(self, hub: _Hub, org_id: str) -> None:
        self.org_id = org_id
        self.queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False
        self.sink: Callable[[str], bool] | None = None
        self._hub = hub

    def put(self, text: str) -> bool:
        """Hand over one event: to the sink if it takes it and nothing is queued, else queue it.

        False when the queue is full: the subscription has overflowed.
        """
        sink = self.sink
        if sink is not None and not self.queue.qsize() and sink(text):
            return True
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True

    async def get(self) -> str:
        """The next event as JSON text (serialised once per replica, shared by every listener)."""
        return await self.queue.get()

    def close(self) -> None:
        """Stop receiving events."""
        self._hub.remove(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class _Hub:
    """Local fan-out from one replica's copy of an event to its subscribers."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = defaultdict(set)

    def add(self, org_id: str) -> Subscription:
        sub = Subscription(self, org_id)
        self._subs[org_id].add(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        group = self._subs.get(sub.org_id)
        if group is not None:
            group.discard(sub)
            if not group:
                del self._subs[sub.org_id]

    def deliver(self, org_id: str, text: str) -> None:
        for sub in list(self._subs.get(org_id, ())):
            if not sub.put(text):
                self.remove(sub)

    @property
    def count(self) -> int:
        return sum(len(group) for group in self._subs.values())


class EventBus(ABC):
    """Publish events to every replica; subscribe to one organisation's events locally."""

    def __init__(self) -> None:
        self._hub = _Hub()
        self.route_handler: RouteHandler | None = None

    def subscribe(self, org_id: str) -> Subscription:
        """A new local subscription to ``org_id``'s events (close it when done)."""
        return self._hub.add(org_id)

    @property
    def subscribers(self) -> int:
        """How many local subscriptions are open."""
        return self._hub.count

    @abstractmethod
    async def publish(self, event: Event) -> None:
        """Send ``event`` to the subscribers of its ``org_id`` on every replica."""

    @abstractmethod
    async def route(self, message: dict[str, Any]) -> None:
        """Send an uplink route to every replica's ``route_handler``."""

    def _deliver_route(self, text: str) -> None:
        handler = self.route_handler
        if handler is None:
            return
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict):
            try:
                handler(message)
            except Exception:
                log.exception("uplink route handler failed")

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Begin receiving (a no-op in process)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop receiving."""


class InProcessBus(EventBus):
    """The embedded bus: one process, no network."""

    async def publish(self, event: Event) -> None:
        """Deliver to local subscribers at once."""
        self._hub.deliver(str(event.get("org_id")), json.dumps(event))

    async def route(self, message: dict[str, Any]) -> None:
        """Hand the route to this process's handler at once."""
        self._deliver_route(json.dumps(message))


class RedisBus(EventBus):
    """Redis pub/sub on one channel per deployment; survives Redis restarts by resubscribing.

    An event published here goes to this replica's own subscribers as soon as the PUBLISH is
    written to Redis, before Redis's reply and without waiting for it to come back. On the channel it is ``"<origin> <event
    JSON>"`` (``origin``: a random id per bus), so this replica skips its own copy when Redis
    echoes it; a message without that prefix (a plain JSON object) is delivered as it is.
    """

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__()
        self._redis = redis
        self.channel = f"{prefix}:events"
        self.uplink_channel = f"{prefix}:uplink"
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._origin = os.urandom(8).hex()

    async def publish(self, event: Event) -> None:
        """Send through Redis to the other replicas and deliver to this replica's own
        subscribers while Redis forwards it: the PUBLISH is written first, the local fan-out
        runs, then Redis's reply is read (the echo is skipped). If Redis is down, only this
        replica's subscribers get it."""
        text = json.dumps(event)
        pool = self._redis.connection_pool
        conn = None
        try:
            conn = await pool.get_connection()  # connected and checked by the pool
            await conn.send_command("PUBLISH", self.channel, f"{self._origin} {text}")
        except (RedisError, OSError) as exc:
            log.warning("redis publish failed (%s); delivering locally only", type(exc).__name__)
            if conn is not None:
                await conn.disconnect()
                await pool.release(conn)
                conn = None
        try:
            self._hub.deliver(str(event.get("org_id")), text)
        finally:
            if conn is not None:
                await _read_reply(pool, conn)

    async def route(self, message: dict[str, Any]) -> None:
        """Publish on the uplink channel; if Redis is down, this replica still acts on it."""
        text = json.dumps(message)
        try:
            await self._redis.publish(self.uplink_channel, text)
        except (RedisError, OSError) as exc:
            log.warning("redis publish failed (%s); routing locally only", type(exc).__name__)
            self._deliver_route(text)

    async def start(self) -> None:
        """Subscribe and wait (up to 5 s) until the subscription is live."""
        self._task = asyncio.create_task(self._listen(), name="redis-bus")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 5)

    async def close(self) -> None:
        """Stop the listener."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel, self.uplink_channel)
                self._ready.set()
                delay = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._on_message(message.get("channel"), message.get("data"))
            except (RedisError, OSError) as exc:
                log.warning("redis subscription lost (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _on_message(self, channel: Any, data: Any) -> None:
        try:
            text = data.decode("utf-8") if isinstance(data, bytes) else str(data)
            name = channel.decode("utf-8") if isinstance(channel, bytes) else str(channel)
            if name == self.uplink_channel:
                self._deliver_route(text)
                return
            if not text.startswith("{"):
                origin, _, text = text.partition(" ")
                if origin == self._origin:
                    return  # this replica's own event: its subscribers already have it
            event = json.loads(text)
        except (TypeError, ValueError):
            return
        if isinstance(event, dict):
            self._hub.deliver(str(event.get("org_id")), text)


async def _read_reply(pool: Any, conn: Any) -> None:
    """Read a sent command's reply, then give the connection back to ``pool`` (closed first
    unless the reply was read: it must never reach the connection's next user)."""
    clean = False
    try:
        await conn.read_response()
        clean = True
    except (RedisError, OSError) as exc:
        log.warning("redis publish failed (%s); delivered locally", type(exc).__name__)
    finally:
        if not clean:
            await conn.disconnect()
        await pool.release(conn)


class BusSink:
    """The event sink the services publish to: counts each event and sends it over the bus."""

    def __init__(self, bus: EventBus, metrics: Metrics) -> None:
        self._bus = bus
        self._metrics = metrics

    async def publish(self, event: events.Event) -> None:
        """Send ``event`` to its organisation's operator streams on every replica."""
        self._metrics.events_published += 1
        await self._bus.publish(events.to_wire(event))
