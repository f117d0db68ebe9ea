"""Rendered reads (``SecretService.keep_rendered``): the hot read's whole response, value
included, kept for a secret's current version so that a repeated read skips the AES-GCM open.

What docs/threat-model.md promises of it, each proven here over real HTTP servers on a real
agent: a repeated read is served from the rendering (the value is not opened again) and is byte
for byte the full path's answer; every change to the secret, a KEK rotation, a rekey and another
worker's commit drop the rendering at once (not merely stop serving it); the renderings are
bounded in bytes and dropped when they expire, read or not; ``max_bytes: 0`` turns it off.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.api import fastread
from agent.api.app import build_app
from agent.assembly import Agent
from agent.crypto import KeySource, SecretBytes
from agent.settings import load_agent_settings
from serverkit.runner import EdgeRunner
from tests.conftest import init_agent_dir

VALUE = "rendered-" + "r" * 400


class Served:
    """A real agent behind ``keyvault agent run``'s server (hot read in front), a session, and
    a count of the value opens the agent's key manager made."""

    def __init__(self, agent: Agent, url: str, admin: str) -> None:
        self.agent, self.url, self.admin = agent, url, admin
        self.opens = 0
        real = agent.keys.open

        def counting(*args: Any) -> bytes:
            self.opens += 1
            return real(*args)

        agent.keys.open = counting  # type: ignore[method-assign]

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.admin}"}
        async with aiohttp.ClientSession() as session:
            async with session.request(method, self.url + path, headers=headers, **kw) as resp:
                body = await resp.read()
                return resp.status, (json.loads(body) if body else None)

    async def read(self, ref: str) -> tuple[int, Any]:
        return await self.call("GET", f"/api/v1/secrets/{ref}")

    async def create(self, name: str, value: str = VALUE) -> str:
        status, doc = await self.call(
            "POST", "/api/v1/secrets", json={"name": name, "value": value}
        )
        assert status == 201, doc
        return str(doc["id"])

    def kept(self, sid: str) -> bytes | None:
        """The rendering held for ``sid`` (whatever it is), or None."""
        hit = self.agent.secrets._rendered.get(sid)
        return hit[2] if hit is not None else None


Factory = Callable[..., Any]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Factory]:
    """``await serve(**settings)``: an agent with those settings, served as the daemon serves."""
    runners: list[tuple[EdgeRunner, Agent]] = []

    async def start(**overrides: Any) -> Served:
        folder = init_agent_dir(tmp_path / f"agent{len(runners)}")
        agent = Agent.open(load_agent_settings(None, folder.path, **overrides))
        app = build_app(agent)
        runner = EdgeRunner(app, front=fastread.front(agent, app), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        runners.append((runner, agent))
        return Served(agent, f"http://127.0.0.1:{port}", folder.token)

    yield start
    for runner, agent in runners:
        await runner.cleanup()
        agent.close()


async def test_a_repeated_read_is_served_from_its_rendering_byte_for_byte(serve: Factory) -> None:
    s = await serve()
    sid = await s.create("app/db")
    first = await s.read(sid)
    assert first[0] == 200 and first[1]["value"] == VALUE
    assert s.opens == 1 and s.kept(sid) is not None
    for ref in (sid, "app%2Fdb"):
        assert await s.read(ref) == first
    assert s.opens == 1  # not opened again
    # byte for byte what the full path (no hot read) answers
    full = await s.call("GET", f"/api/v1/secrets/{sid}?version=1")
    assert full == first
    assert VALUE not in repr(s.agent.secrets)


async def test_every_change_drops_the_rendering_at_once(serve: Factory) -> None:
    s = await serve()
    sid = await s.create("svc/token")
    other = await s.create("svc/other", "untouched")

    async def warm() -> None:  # twice: a first read after a cache miss takes the full path
        for _ in range(2):
            assert (await s.read(sid))[0] == 200
            assert (await s.read(other))[0] == 200
        assert s.kept(sid) is not None and s.kept(other) is not None

    changes: list[tuple[str, Callable[[], Any]]] = [
        ("new value", lambda: s.call("PUT", f"/api/v1/secrets/{sid}", json={"value": "v2"})),
        ("metadata", lambda: s.call("PUT", f"/api/v1/secrets/{sid}", json={"description": "d"})),
        ("generated rotation", lambda: s.call("POST", f"/api/v1/secrets/{sid}/rotate")),
    ]
    for what, change in changes:
        await warm()
        status, _ = await change()
        assert status == 200, what
        assert s.kept(sid) is None, what  # gone from memory, not merely stale
        assert s.kept(other) is not None, what
        _, meta, value = await s.agent.secrets.reveal(sid)
        status, doc = await s.read(sid)
        assert (status, doc["value"], doc["version"]) == (200, value, meta), what

    await warm()
    result = await s.agent.keys.rotate_kek()  # every value re-wrapped under a new KEK
    assert result.destroyed
    assert s.kept(sid) is None and s.kept(other) is None
    assert (await s.read(other))[1]["value"] == "untouched"

    await warm()
    await s.agent.keys.rekey(
        KeySource("keyfile", SecretBytes(bytes(range(32)))), iterations=100_000
    )
    assert s.agent.secrets._rendered == {}

    await warm()
    s.agent.secrets.forget_cached()  # what a worker does when another worker committed
    assert s.agent.secrets._rendered == {} and s.agent.secrets._rendered_bytes == 0

    await warm()
    assert (await s.call("DELETE", f"/api/v1/secrets/{sid}"))[0] == 200
    assert s.kept(sid) is None
    status, doc = await s.read(sid)
    assert status == 404 and "deleted" in doc["error"]["message"]
    assert (await s.call("POST", f"/api/v1/secrets/{sid}/undelete"))[0] == 200
    await warm()
    assert (await s.call("DELETE", f"/api/v1/secrets/{sid}"))[0] == 200
    assert (await s.call("POST", f"/api/v1/secrets/{sid}/destroy"))[0] == 200
    assert s.kept(sid) is None and (await s.read(sid))[0] == 404
    assert all(b"r" * 400 not in hit[2] for hit in s.agent.secrets._rendered.values())


async def test_renderings_are_bounded_in_bytes_and_dropped_when_they_expire(
    serve: Factory,
) -> None:
    s = await serve(read_cache={"max_bytes": 6000, "ttl_seconds": 0.5})
    ids = [await s.create(f"many/k{i}", f"{i:03d}" + "x" * 300) for i in range(12)]
    for sid in ids:
        assert (await s.read(sid))[0] == 200
    secrets = s.agent.secrets
    assert 0 < secrets._rendered_bytes <= 6000
    assert secrets._rendered_bytes == sum(len(hit[2]) for hit in secrets._rendered.values())
    assert s.kept(ids[-1]) is not None and s.kept(ids[0]) is None  # the oldest made room
    big = await s.create("many/big", "b" * 900)  # its body is over 6000 / 8: never kept
    assert (await s.read(big))[0] == 200 and s.kept(big) is None
    # expiry: unread renderings are dropped by the timer, not at the next read
    await asyncio.sleep(0.8)
    assert secrets._rendered == {} and secrets._rendered_bytes == 0
    before = s.opens
    assert (await s.read(ids[-1]))[1]["value"].startswith("011")
    assert s.opens == before + 1  # expired: opened again


async def test_max_bytes_zero_turns_rendered_reads_off(serve: Factory) -> None:
    s = await serve(read_cache={"max_bytes": 0})
    sid = await s.create("off/x")
    for _ in range(3):
        assert (await s.read(sid))[1]["value"] == VALUE
    assert s.opens == 3 and s.agent.secrets._rendered == {}
