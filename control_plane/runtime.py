"""The running control plane, assembled bottom-up: resources first, then services.

:func:`open_control_plane` connects the resources (engine, Redis, bus, limiter, lock) and
:func:`build_services` builds every service in dependency order, handing each exactly the
collaborators it uses (no service sees this module). :class:`ControlPlane` only holds the result
for the views and tests, and :meth:`ControlPlane.close` releases it; the aiohttp app does both
from its ``cleanup_ctx``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from common.errors import UnavailableError
from control_plane import db
from control_plane.background import Background, Clock, Spawn
from control_plane.bus import BusSink, EventBus, InProcessBus, RedisBus
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
from control_plane.services.accounts import Accounts
from control_plane.services.alerts import Alerts
from control_plane.services.audit import Audit
from control_plane.services.ca import CAStore
from control_plane.services.commands import Commands
from control_plane.services.ingest import Ingest
from control_plane.services.inventory import Inventory
from control_plane.services.policies import Policies
from control_plane.services.presence import VaultPresence
from control_plane.services.rotation import Rotations
from control_plane.services.sso import SingleSignOn, outbound_policy
from control_plane.services.users import Users
from control_plane.services.vaults import Vaults
from control_plane.settings import ControlPlaneSettings

log = logging.getLogger("keyvault.control_plane")
REDIS_CONNECTIONS = 200


@dataclass(frozen=True)
class Resources:
    """What the services are built on: connections, coordination, clock, counters."""

    settings: ControlPlaneSettings
    engine: AsyncEngine
    bus: EventBus
    limiter: LoginLimiter
    lock: SweepLock
    clock: Clock
    metrics: Metrics
    background: Background


@dataclass(frozen=True)
class Services:
    """Every control-plane service, each built with only what it uses."""

    audit: Audit
    accounts: Accounts
    alerts: Alerts
    vaults: Vaults
    policies: Policies
    commands: Commands
    inventory: Inventory
    ingest: Ingest
    rotations: Rotations
    presence: VaultPresence
    users: Users
    sso: SingleSignOn


def build_services(r: Resources) -> Services:
    """Build the services bottom-up: each after the ones it depends on."""
    sink = BusSink(r.bus, r.metrics)
    spawn = r.background.spawn
    audit = Audit(engine=r.engine, clock=r.clock)
    alerts = Alerts(
        engine=r.engine,
        clock=r.clock,
        settings=r.settings,
        metrics=r.metrics,
        sink=sink,
        spawn=spawn,
    )
    accounts = Accounts(
        engine=r.engine,
        clock=r.clock,
        settings=r.settings,
        limiter=r.limiter,
        sink=sink,
        audit=audit,
    )
    vaults = Vaults(
        engine=r.engine,
        clock=r.clock,
        settings=r.settings,
        bus=r.bus,
        lock=r.lock,
        metrics=r.metrics,
        sink=sink,
        audit=audit,
        alerts=alerts,
        cas=CAStore(engine=r.engine, clock=r.clock, settings=r.settings),
    )
    policies = Policies(engine=r.engine, clock=r.clock, sink=sink)
    commands = Commands(engine=r.engine, clock=r.clock, bus=r.bus, vaults=vaults)
    inventory = Inventory(engine=r.engine, vaults=vaults)
    rotations = Rotations(engine=r.engine, clock=r.clock, lock=r.lock, alerts=alerts)
    ingest = Ingest(
        engine=r.engine,
        clock=r.clock,
        metrics=r.metrics,
        sink=sink,
        audit=audit,
        inventory=inventory,
        rotations=rotations,
        commands=commands,
        alerts=alerts,
    )
    presence = VaultPresence(
        engine=r.engine,
        clock=r.clock,
        settings=r.settings,
        sink=sink,
        spawn=spawn,
        audit=audit,
        alerts=alerts,
        vaults=vaults,
    )
    users = Users(
        engine=r.engine,
        clock=r.clock,
        limiter=r.limiter,
        sink=sink,
        audit=audit,
        accounts=accounts,
    )
    sso = SingleSignOn(
        engine=r.engine,
        clock=r.clock,
        limiter=r.limiter,
        audit=audit,
        accounts=accounts,
        users=users,
        policy=outbound_policy(r.settings),
    )
    return Services(
        audit,
        accounts,
        alerts,
        vaults,
        policies,
        commands,
        inventory,
        ingest,
        rotations,
        presence,
        users,
        sso,
    )


class ControlPlane:
    """The assembled control plane: its resources and services, for views, tasks and tests."""

    def __init__(self, resources: Resources, services: Services, redis: Redis | None) -> None:
        self.resources = resources
        self.settings = resources.settings
        self.engine = resources.engine
        self.bus = resources.bus
        self.limiter = resources.limiter
        self.lock = resources.lock
        self.clock = resources.clock
        self.metrics = resources.metrics
        self.redis = redis
        self.started = time.monotonic()
        self._background = resources.background
        self.audit = services.audit
        self.accounts = services.accounts
        self.alerts = services.alerts
        self.vaults = services.vaults
        self.policies = services.policies
        self.commands = services.commands
        self.inventory = services.inventory
        self.ingest = services.ingest
        self.rotations = services.rotations
        self.presence = services.presence
        self.users = services.users
        self.sso = services.sso
        self.uplink_connections: Callable[[], int] = lambda: 0  # set by the gateway's hub

    def now(self) -> datetime:
        """The current time from the injectable clock."""
        return self.clock()

    @property
    def spawn(self) -> Spawn:
        """Run a fire-and-forget coroutine that is cancelled at close."""
        return self._background.spawn

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
        await self._background.close()
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
    resources = Resources(settings, engine, bus, limiter, lock, clock, Metrics(), Background())
    return ControlPlane(resources, build_services(resources), redis)
