"""Agent API fixtures: the real app in-process, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.api.app import build_app
from agent.cli import load_agent_settings
from agent.runtime import Agent
from tests.conftest import AgentDir, init_agent_dir


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
