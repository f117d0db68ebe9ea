"""End-to-end fixtures: control-plane replicas and vault agents as real processes.

Every test gets a fresh PostgreSQL database and a private Redis prefix; replicas are
``keyvault control-plane run`` processes sharing them, agents are ``keyvault agent run``
processes enrolled through the gateway with ``keyvault agent enroll``. Everything talks over
real mutual TLS on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    AgentDir,
    AgentProcess,
    fresh_pg_database,
    init_agent_dir,
    need_service,
    start_agent,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
OWNER_EMAIL = "owner@e2e.test"
OWNER_PASSWORD = "end to end owner password"
CLI = [sys.executable, "-m", "apps.cli.main"]


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


@dataclass
class Replica:
    """One ``control-plane run`` process."""

    proc: subprocess.Popen[bytes]
    api_url: str
    gateway_url: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the replica and wait for it to exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@dataclass
class ControlPlane:
    """A control-plane deployment: one database, one Redis prefix, any number of replicas."""

    root: Path
    env: dict[str, str]
    database: str
    replicas: list[Replica] = field(default_factory=list)
    _token: str | None = None

    def start_replica(self, *, gateway_port: int = 0, timeout: float = 60) -> Replica:
        """Start a replica and wait until both its listeners answer."""
        n = len(self.replicas)
        ready = self.root / f"ready-{n}.json"
        ready.unlink(missing_ok=True)
        log = self.root / f"cp-{n}.log"
        env = {**self.env, "KEYVAULT_CP_GATEWAY_PORT": str(gateway_port)}
        proc = subprocess.Popen(
            [*CLI, "control-plane", "run", "--ready-file", str(ready)],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while not (ready.exists() and ready.stat().st_size):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"control plane did not start: {log.read_text()[-3000:]}")
            time.sleep(0.05)
        urls = json.loads(ready.read_text())
        replica = Replica(proc, urls["api_url"], urls["gateway_url"], log)
        self.replicas.append(replica)
        return replica

    def restart(self, replica: Replica, *, sig: int = signal.SIGKILL) -> Replica:
        """Kill a replica and start it again on the same gateway port."""
        port = int(replica.gateway_url.rsplit(":", 1)[1])
        replica.stop(sig)
        self.replicas.remove(replica)
        return self.start_replica(gateway_port=port)

    def api(self, replica: Replica | None = None) -> httpx.Client:
        """An operator API client logged in as the owner."""
        base = (replica or self.replicas[0]).api_url
        if self._token is None:
            r = httpx.post(
                base + "/api/v1/auth/login",
                json={"email": OWNER_EMAIL, "password": OWNER_PASSWORD},
                timeout=30,
            )
            r.raise_for_status()
            self._token = r.json()["token"]
        return httpx.Client(
            base_url=base + "/api/v1",
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=30,
        )

    def enrollment_token(self, ttl: int | None = None) -> str:
        """A fresh single-use enrollment token."""
        body: dict[str, Any] = {"description": "e2e"}
        if ttl is not None:
            body["ttl_seconds"] = ttl
        with self.api() as c:
            r = c.post("/enrollment-tokens", json=body)
            r.raise_for_status()
            return str(r.json()["token"])

    def logs(self) -> bytes:
        """Every replica's log so far."""
        return b"".join(p.read_bytes() for p in sorted(self.root.glob("cp-*.log")))

    def stop(self) -> None:
        """Stop every replica."""
        for replica in self.replicas:
            replica.stop()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A private Redis key prefix, its keys deleted afterwards (Redis must be up)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        need_service("Redis", exc)
    prefix = f"kve2e-{uuid.uuid4().hex[:8]}"
    yield prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def control_plane(tmp_path: Path, redis_prefix: str) -> Iterator[ControlPlane]:
    """A production-mode control plane (PostgreSQL + Redis), one replica started."""
    with fresh_pg_database("kv_e2e") as db:
        root = tmp_path / "cp"
        root.mkdir()
        env = {
            **os.environ,
            "KEYVAULT_CP_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
            "KEYVAULT_CP_REDIS_URL": REDIS_URL,
            "KEYVAULT_CP_REDIS_PREFIX": redis_prefix,
            "KEYVAULT_CP_CA_KEY_PASSPHRASE": uuid.uuid4().hex,
            "KEYVAULT_CP_OWNER_PASSWORD": OWNER_PASSWORD,
            "KEYVAULT_CP_PORT": "0",
            "KEYVAULT_CP_OFFLINE_AFTER_SECONDS": "5",
            "KEYVAULT_CP_SWEEP_INTERVAL_SECONDS": "1",
            "KEYVAULT_CP_LOG_LEVEL": "DEBUG",
            "KEYVAULT_CP_ARGON2_TIME_COST": "1",
            "KEYVAULT_CP_ARGON2_MEMORY_KIB": "8192",
        }
        subprocess.run(
            [*CLI, "control-plane", "init", "--org", "E2E", "--email", OWNER_EMAIL],
            env=env,
            check=True,
            capture_output=True,
        )
        cp = ControlPlane(root, env, db)
        cp.start_replica()
        try:
            yield cp
        finally:
            cp.stop()


UPLINK_ENV = {
    "KEYVAULT_UPLINK__HEARTBEAT_INTERVAL": "1",
    "KEYVAULT_UPLINK__BACKOFF_BASE": "0.1",
    "KEYVAULT_UPLINK__BACKOFF_CAP": "1",
}


@dataclass
class FleetAgent:
    """An enrolled agent directory and (when running) its process."""

    dir: AgentDir
    proc: AgentProcess | None = None
    trace: Path | None = None

    @property
    def vault_id(self) -> str:
        """The id the control plane gave this vault at enrollment."""
        state = json.loads((self.dir.path / "uplink" / "state.json").read_text())
        return str(state["vault_id"])

    def start(self, *extra: str, env: dict[str, str] | None = None) -> AgentProcess:
        """Run the agent (uplink settings tuned for tests)."""
        self.proc = start_agent(self.dir, *extra, env={**UPLINK_ENV, **(env or {})})
        return self.proc

    def health(self) -> dict[str, Any]:
        """The agent's /sys/health document."""
        assert self.proc is not None
        with self.proc.client() as c:
            return dict(c.health())

    def stop(self) -> None:
        """Stop the agent process if it runs."""
        if self.proc is not None and self.proc.proc.poll() is None:
            self.proc.stop()


def enroll(
    agent_dir: AgentDir, gateway_url: str, token: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ``keyvault agent enroll``; returns the completed process (check it yourself)."""
    return subprocess.run(
        [
            *CLI,
            "agent",
            "enroll",
            "--data-dir",
            str(agent_dir.path),
            "--control-plane",
            gateway_url,
            "--token",
            token,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def make_agent(tmp_path: Path) -> Iterator[Callable[..., FleetAgent]]:
    """Factory: an initialised, enrolled (not yet started) agent for a control plane."""
    made: list[FleetAgent] = []

    def make(cp: ControlPlane, name: str, metadata_key: Path | None = None) -> FleetAgent:
        folder = tmp_path / name
        agent_dir = init_agent_dir(folder)
        if metadata_key is not None:
            (folder / "metadata.key").write_bytes(metadata_key.read_bytes())
            (folder / "metadata.key").chmod(0o600)
        result = enroll(
            agent_dir, cp.replicas[0].gateway_url, cp.enrollment_token(), "--name", name
        )
        assert result.returncode == 0, result.stderr
        agent = FleetAgent(agent_dir)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.stop()
