"""Restarts of Redis and PostgreSQL while the control plane runs: it recovers on its own and
loses no alert. Both servers are private to this test (never the shared ones)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from control_plane.app import build_app
from control_plane.settings import ControlPlaneSettings
from control_plane.views.context import CP
from tests.conftest import need_service
from tests.control_plane.conftest import Api, Clock
from tests.control_plane.test_policies_alerts import POLICY, new_vault
from tests.control_plane.test_stream import next_event

pytestmark = pytest.mark.postgres


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@dataclass
class PrivateRedis:
    """A redis-server child process that can be restarted on the same port."""

    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class PrivatePostgres:
    """A throw-away PostgreSQL cluster (initdb) that can be stopped and started."""

    folder: Path
    port: int

    def _ctl(self, *args: str) -> None:
        cmd = ["pg_ctl", "-D", str(self.folder / "data"), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        cmd = ["initdb", "-D", str(self.folder / "data"), "-U", "kv", "--auth=trust"]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.folder} -c fsync=off -c listen_addresses=127.0.0.1"
        self._ctl("-o", opts, "-w", "-l", str(self.folder / "log"), "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")


@pytest.fixture
def servers() -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    """A private PostgreSQL and Redis, removed afterwards."""
    if not shutil.which("redis-server") or not shutil.which("initdb"):
        need_service("redis-server/initdb binaries", RuntimeError("not installed"))
    folder = Path(tempfile.mkdtemp(prefix="kvcp-pg-"))
    pg, redis = PrivatePostgres(folder, _free_port()), PrivateRedis(_free_port())
    try:
        pg.init()
        pg.start()
        redis.start()
    except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        need_service("private PostgreSQL/Redis", exc)
    try:
        yield pg, redis
    finally:
        redis.stop()
        try:
            pg.stop()
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(folder, ignore_errors=True)


async def _until(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_recovers_from_redis_and_postgres_restarts(
    aiohttp_client: Any, servers: tuple[PrivatePostgres, PrivateRedis]
) -> None:
    pg, redis = servers
    settings = ControlPlaneSettings.model_validate(
        {
            "database_url": f"postgresql+psycopg://kv@127.0.0.1:{pg.port}/postgres",
            "redis_url": f"redis://127.0.0.1:{redis.port}/0",
            "ca_key_passphrase": "p",
            "argon2_time_cost": 1,
            "argon2_memory_kib": 64,
            "background_tasks": False,
            "offline_after_seconds": 60,
            "gateway_port": 0,
        }
    )
    clock = Clock()
    app = build_app(settings, clock=clock)
    client = await aiohttp_client(app)
    api = Api(client, app[CP], clock)
    owner = await api.org("Acme", "owner@acme.test")
    vid = await new_vault(api, owner)
    await api.cp.vaults.heartbeat(vid)
    ws = await client.ws_connect("/api/v1/stream", headers={"Authorization": f"Bearer {owner}"})
    await next_event(ws, "hello")

    # Redis goes away and comes back: login (rate limiter) and the stream work again
    redis.stop()
    assert (await api.call("GET", "/ready"))[0] == 503
    assert await api.login("owner@acme.test")  # the limiter degrades to in-process
    redis.start()

    async def stream_works() -> None:
        name = f"p{time.monotonic_ns()}"
        status, _ = await api.call("POST", "/policies", owner, json={**POLICY, "name": name})
        assert status == 201
        event = await next_event(ws, "policy.created", timeout=1)
        assert event["data"]["name"] == name

    await _until(stream_works)
    assert await api.login("owner@acme.test")
    assert (await api.call("GET", "/ready"))[0] == 200

    # PostgreSQL goes away while a vault falls silent; the alert comes once it is back
    clock.advance(120)
    pg.stop()
    assert (await api.call("GET", "/ready"))[0] == 503
    with pytest.raises(Exception):
        await api.cp.vaults.sweep_offline()
    pg.start()
    assert await _until(api.cp.vaults.sweep_offline) == 1
    raised = await next_event(ws, "alert.raised")
    assert raised["data"]["vault_id"] == vid
    status, alerts = await api.call("GET", "/alerts?state=open", owner)
    assert status == 200 and len(alerts["items"]) == 1
    await ws.close()
