"""Control-plane fixtures: the app in-process, embedded (SQLite) and production (PostgreSQL + Redis)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from control_plane.app import build_app
from control_plane.gateway.app import GATEWAY, Gateway
from control_plane.runtime import ControlPlane
from control_plane.settings import ControlPlaneSettings
from control_plane.views.context import CP
from tests.conftest import PG_ADMIN_URL, fresh_pg_database, need_service

REDIS_URL = "redis://127.0.0.1:6379/0"
PASSWORD = "correct horse battery staple"


class Clock:
    """A controllable clock: real time plus an offset tests can move forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.offset += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def cp_pg_database() -> Iterator[str]:
    """One PostgreSQL database per test module, dropped afterwards (tables are emptied per test)."""
    with fresh_pg_database("kv_cptest") as name:
        yield name


@pytest.fixture
def cp_pg_url(cp_pg_database: str) -> str:
    """The module's database with every control-plane table emptied (schema kept)."""
    import psycopg

    with psycopg.connect(
        PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{cp_pg_database}", autocommit=True
    ) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename LIKE 'cp\\_%' AND tablename <> 'cp_alembic_version'"
            )
        ]
        if tables:
            conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{cp_pg_database}"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The real Redis, checked reachable."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        need_service("Redis", exc)
    client.close()
    yield REDIS_URL


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique Redis key prefix and channel namespace; its keys are deleted afterwards."""
    import redis

    prefix = f"kvtest-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass
    finally:
        client.close()


def make_settings(
    mode: str, tmp_path: Path, pg: str | None, prefix: str, **extra: Any
) -> ControlPlaneSettings:
    """Settings for tests: fast argon2, a CA passphrase, no background sweep unless asked."""
    values: dict[str, Any] = {
        "ca_key_passphrase": "test-ca-passphrase",
        "argon2_time_cost": 1,
        "argon2_memory_kib": 64,
        "background_tasks": False,
        "login_max_failures": 3,
        "login_lockout_seconds": 60,
        "offline_after_seconds": 60,
        "gateway_port": 0,
        **extra,
    }
    if mode == "embedded":
        values["database_url"] = f"sqlite+aiosqlite:///{tmp_path / 'cp.db'}"
    else:
        assert pg is not None
        values["database_url"] = pg
        values["redis_url"] = REDIS_URL
        values["redis_prefix"] = prefix
    return ControlPlaneSettings.model_validate(values)


@dataclass
class Api:
    """An in-process control plane and an HTTP client bound to it."""

    client: Any
    cp: ControlPlane
    clock: Clock
    tokens: dict[str, str] = field(default_factory=dict)
    gateway: Gateway | None = None

    async def call(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        """One request; returns (status, decoded JSON or text)."""
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        resp = await self.client.request(method, "/api/v1" + path, headers=headers, **kw)
        ctype = resp.headers.get("Content-Type", "")
        body = await (resp.json() if "json" in ctype else resp.text())
        return resp.status, body

    async def org(self, name: str, email: str) -> str:
        """Create an organisation with an owner and log in; returns the owner's token."""
        await self.cp.accounts.create_org(name, email, PASSWORD)
        return await self.login(email)

    async def login(self, email: str, password: str = PASSWORD) -> str:
        """A session token."""
        status, body = await self.call(
            "POST", "/auth/login", json={"email": email, "password": password}
        )
        assert status == 200, body
        return str(body["token"])

    async def member(self, owner_token: str, email: str, role: str) -> str:
        """Invite and accept a user of ``role``; returns their session token."""
        status, inv = await self.call(
            "POST", "/invitations", owner_token, json={"email": email, "role": role}
        )
        assert status == 201, inv
        status, body = await self.call(
            "POST", "/invitations/accept", json={"token": inv["token"], "password": PASSWORD}
        )
        assert status == 201, body
        return await self.login(email)


@pytest.fixture(params=["embedded", "production"])
def mode(request: pytest.FixtureRequest) -> str:
    """Run the test embedded (SQLite, in-process bus) and in production (PostgreSQL + Redis)."""
    return str(request.param)


@pytest.fixture
def settings_factory(
    mode: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[..., ControlPlaneSettings]:
    """Build settings for the current mode; the production mode gets its own DB and prefix."""
    pg = None
    prefix = "unused"
    if mode == "production":
        pg = request.getfixturevalue("cp_pg_url")
        request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")

    def make(**extra: Any) -> ControlPlaneSettings:
        return make_settings(mode, tmp_path, pg, prefix, **extra)

    return make


@pytest.fixture
async def api(
    aiohttp_client: Any, settings_factory: Callable[..., ControlPlaneSettings]
) -> AsyncIterator[Api]:
    """The control plane in-process (current mode) with a test client."""
    clock = Clock()
    app = build_app(settings_factory(), clock=clock)
    client = await aiohttp_client(app)
    yield Api(client, app[CP], clock, gateway=app.get(GATEWAY))
