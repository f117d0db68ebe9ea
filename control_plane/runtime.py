"""The running control plane: its resources (engine, Redis, bus, limiter, lock) and services.

:func:`open_control_plane` builds one from settings and :meth:`ControlPlane.close` releases it;
the aiohttp app does both from its ``cleanup_ctx``. Tests reach the services through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from common.errors import UnavailableError
from control_plane import db
from control_plane.bus import EventBus, InProcessBus, RedisBus
from control_plane.coordination import (
    AdvisoryLock,
    LoginLimiter,
    MemoryLimiter,
    MemoryLock,
    RedisLimiter,
    SweepLock,
    ThrottlePolicy,
)
from control_plane.metrics import Metrics
from control_plane.settings import ControlPlaneSettings

log = logging.getLogger("keyvault.control_plane")
Clock = Callable[[], datetime]
REDIS_CONNECTIONS = 200


class ControlPlane:
    """Everything a request or a background task needs, passed explicitly."""

    def __init__(
        self,
        settings: ControlPlaneSettings,
        engine: AsyncEngine,
        bus: EventBus,
        limiter: LoginLimiter,
        lock: SweepLock,
        redis: Redis | None,
        clock: Clock,
    ) -> None:
        from control_plane.services.accounts import Accounts
        from control_plane.services.alerts import Alerts
        from control_plane.services.audit import Audit
        from control_plane.services.commands import Commands
        from control_plane.services.ingest import Ingest
        from control_plane.services.inventory import Inventory
        from control_plane.services.policies import Policies
        from control_plane.services.rotation import Rotations
        from control_plane.services.uplink import Uplinks
        from control_plane.services.users import Users
        from control_plane.services.vaults import Vaults

        self.settings = settings
        self.engine = engine
        self.bus = bus
        self.limiter = limiter
        self.lock = lock
        self.redis = redis
        self.clock = clock
        self.metrics = Metrics()
        self.started = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.audit = Audit(self)
        self.accounts = Accounts(self)
        self.users = Users(self)
        self.alerts = Alerts(self)
        self.vaults = Vaults(self)
        self.policies = Policies(self)
        self.commands = Commands(self)
        self.inventory = Inventory(self)
        self.ingest = Ingest(self)
        self.rotations = Rotations(self)
        self.uplinks = Uplinks(self)
        self.uplink_connections: Callable[[], int] = lambda: 0  # set by the gateway's hub

    def now(self) -> datetime:
        """The current time from the injectable clock."""
        return self.clock()

    async def publish(self, org_id: str, kind: str, data: dict[str, Any]) -> None:
        """Send an event to the organisation's operator streams on every replica."""
        event = {"type": kind, "org_id": org_id, "at": db.iso(self.now()), "data": data}
        self.metrics.events_published += 1
        await self.bus.publish(event)

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Run a fire-and-forget coroutine that is cancelled at close."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def ready(self) -> dict[str, str]:
        """Check the database and (in production) Redis; raise UnavailableError if one is down."""
        checks = {"database": "ok", "redis": "embedded" if self.redis is None else "ok"}
        await db.ping(self.engine)
        if self.redis is not None:
            try:
                await self.redis.ping()
            except (RedisError, OSError) as exc:
                raise UnavailableError("redis is unreachable") from exc
        return checks

    async def close(self) -> None:
        """Cancel background work and release every resource."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.bus.close()
        self.accounts.passwords.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()


def throttle_policy(settings: ControlPlaneSettings) -> ThrottlePolicy:
    """The login throttling settings as one policy."""
    return ThrottlePolicy(
        free_failures=settings.login_max_failures,
        base_delay=settings.login_delay_seconds,
        max_delay=settings.login_lockout_seconds,
        source_failures=settings.login_source_max_failures,
        source_window=settings.login_source_window_seconds,
    )


async def open_control_plane(
    settings: ControlPlaneSettings, *, clock: Clock = db.utcnow, migrate: bool = True
) -> ControlPlane:
    """Connect to the database (migrating it) and to Redis, and start the bus."""
    engine = db.make_engine(settings.database_url)
    if migrate:
        await db.migrate(engine)
    redis: Redis | None = None
    bus: EventBus
    limiter: LoginLimiter
    lock: SweepLock
    if settings.redis_url is None:
        bus = InProcessBus()
        limiter = MemoryLimiter(throttle_policy(settings))
    else:
        # callers wait for a free connection (up to 5 s) instead of failing in a burst
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=REDIS_CONNECTIONS,
            timeout=5,
            socket_timeout=5,
            socket_connect_timeout=5,
        )
        redis = Redis(connection_pool=pool)
        bus = RedisBus(redis, settings.redis_prefix)
        limiter = RedisLimiter(redis, settings.redis_prefix, throttle_policy(settings))
    lock = AdvisoryLock(engine) if db.is_postgres(engine) else MemoryLock()
    await bus.start()
    return ControlPlane(settings, engine, bus, limiter, lock, redis, clock)
