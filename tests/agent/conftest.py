"""Agent API fixtures: the real app in-process, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agent.api.app import build_app
from agent.assembly import Agent
from agent.settings import load_agent_settings
from common.metadata_key import MetadataKey
from tests.agent.fake_gateway import FakeGateway
from tests.conftest import AgentDir, init_agent_dir

if TYPE_CHECKING:
    from agent.uplink.service import Uplink


@dataclass
class Api:
    """An in-process agent and an HTTP client bound to it."""

    agent: Agent
    client: Any
    dir: AgentDir

    def auth(self, token: str | None = None) -> dict[str, str]:
        """Headers carrying a bearer token (the admin's by default)."""
        return {"Authorization": f"Bearer {token or self.dir.token}"}

    async def call(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        """One request; returns (status, decoded JSON or text)."""
        resp = await self.client.request(method, path, headers=self.auth(token), **kw)
        ctype = resp.headers.get("Content-Type", "")
        body = await (resp.json() if "json" in ctype else resp.text())
        return resp.status, body

    async def token(self, *rules: tuple[str, list[str]]) -> str:
        """Mint a token with the given (glob, capabilities) rules."""
        policy = [{"path": p, "capabilities": c} for p, c in rules]
        status, body = await self.call(
            "POST", "/api/v1/sys/tokens", json={"name": "t", "policy": policy}
        )
        assert status == 201, body
        return str(body["token"])


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test on each storage backend."""
    return str(request.param)


@pytest.fixture
def storage_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None for SQLite (the default), a fresh database for PostgreSQL."""
    if backend == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def api(tmp_path: Path, storage_url: str | None, aiohttp_client: Any) -> AsyncIterator[Api]:
    """The agent app on a fresh folder, served by aiohttp's test server (plain HTTP, in-process)."""
    folder = init_agent_dir(tmp_path / "agent", storage_url=storage_url)
    settings = load_agent_settings(None, folder.path)
    agent = Agent.open(settings)
    client = await aiohttp_client(build_app(agent))
    try:
        yield Api(agent, client, folder)
    finally:
        await client.close()
        agent.close()


# --------------------------------------------------------------------------- the fleet link

FAST_UPLINK = {
    "heartbeat_interval": 0.3,
    "backoff_base": 0.05,
    "backoff_cap": 0.2,
    "enroll_poll_interval": 0.1,
    "ack_timeout": 5.0,
}
FAST_UPLINK_ENV = {f"KEYVAULT_UPLINK__{k.upper()}": str(v) for k, v in FAST_UPLINK.items()}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[FakeGateway]:
    """A fake agent gateway on a real TLS 1.3 listener (its own thread)."""
    with FakeGateway(tmp_path / "gateway") as gw:
        yield gw


def enroll_dir(folder: AgentDir, gw: FakeGateway, name: str = "test-vault") -> str:
    """Enroll a data folder with the fake gateway; returns the vault id."""
    from agent.uplink.enroll import enroll

    return enroll(folder.path, gw.url, gw.token(), name=name).vault_id


@pytest.fixture
def enrolled(tmp_path: Path, gateway: FakeGateway) -> AgentDir:
    """A fresh SQLite agent folder enrolled with the fake gateway."""
    folder = init_agent_dir(tmp_path / "agent")
    enroll_dir(folder, gateway)
    return folder


@contextlib.asynccontextmanager
async def running_uplink(
    folder: AgentDir, *, clock: Any = None, **uplink: Any
) -> AsyncIterator[tuple[Agent, Uplink]]:
    """The agent of ``folder`` opened in-process with its uplink running (fast settings)."""
    from agent.uplink.service import Uplink

    settings = load_agent_settings(None, folder.path, uplink={**FAST_UPLINK, **uplink})
    agent = await asyncio.to_thread(Agent.open, settings)
    link = Uplink(agent, clock=clock) if clock is not None else Uplink(agent)
    try:
        link.prepare()
        link.start()
        yield agent, link
    finally:
        await link.stop(5)
        await asyncio.to_thread(agent.close)


INTENT_KEY = MetadataKey(bytes(range(32)))  # the organisation's metadata key in agent tests


@pytest.fixture
def keyed(enrolled: AgentDir) -> AgentDir:
    """The enrolled folder with the organisation's metadata key installed (it verifies intents)."""
    INTENT_KEY.save(enrolled.path / "metadata.key")
    return enrolled


def sealed_command(
    folder: AgentDir, command: str, args: dict[str, Any], *, key: MetadataKey = INTENT_KEY
) -> dict[str, Any]:
    """A ``command`` frame sealed by an operator for the folder's vault."""
    from agent.uplink.state import UplinkFiles
    from common import intents

    state = UplinkFiles(folder.path / "uplink").load_state()
    assert state is not None
    doc = intents.IntentKeys(key).seal(
        intents.command_header(state.vault_id), {"command": command, "args": args}
    )
    return {"type": "command", "id": doc["id"], "intent": doc}


def sealed_policy(
    body: dict[str, Any],
    *,
    policy_id: str | None = None,
    revision: int = 1,
    interval_seconds: int = 86400,
    vault_ids: list[str] | None = None,
    key: MetadataKey = INTENT_KEY,
) -> dict[str, Any]:
    """A policy intent (``body``: name, selector, rotator) as the control plane relays it."""
    from common import intents

    header = intents.policy_header(
        policy_id or intents.new_id("pol"), revision, interval_seconds=interval_seconds,
        notice_seconds=0, vault_ids=vault_ids,
    )  # fmt: skip
    return intents.IntentKeys(key).seal(header, body)
