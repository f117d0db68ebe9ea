"""Offline detection by the replica that held the uplink: within the timeout + 2 s of the
last heartbeat, not when the vault reconnects in time, dead peers found by WebSocket pings,
and the alert resolved on reconnect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from control_plane.app import build_app
from control_plane.gateway.app import GATEWAY
from control_plane.settings import ControlPlaneSettings
from control_plane.views.context import CP
from tests.control_plane.conftest import Api, Clock
from tests.control_plane.mock_agent import enroll
from tests.control_plane.test_stream import next_event

OFFLINE_AFTER = 2


@pytest.fixture
async def fast(
    aiohttp_client: Any, settings_factory: Callable[..., ControlPlaneSettings]
) -> AsyncIterator[Api]:
    """A control plane with a 2 s offline timeout and fast pings (no periodic sweep)."""
    settings = settings_factory(
        offline_after_seconds=OFFLINE_AFTER,
        uplink_heartbeat_seconds=0.5,
        gateway_ping_seconds=1.0,
    )
    app = build_app(settings, clock=Clock())
    client = await aiohttp_client(app)
    yield Api(client, app[CP], Clock(), gateway=app[GATEWAY])


async def _recorded(api: Api, owner: str, vault_id: str, since: str | None) -> str:
    for _ in range(200):
        _, vault = await api.call("GET", f"/vaults/{vault_id}", owner)
        if vault["last_heartbeat_at"] != since:
            return str(vault["last_heartbeat_at"])
        await asyncio.sleep(0.01)
    raise AssertionError("heartbeat not recorded")


async def test_offline_alert_within_timeout_plus_two_seconds(fast: Api, tmp_path: Path) -> None:
    owner = await fast.org("Acme", "owner@acme.test")
    agent = await enroll(fast, owner, tmp_path / "agent")
    stream = await fast.client.ws_connect(
        "/api/v1/stream", headers={"Authorization": f"Bearer {owner}"}
    )
    await next_event(stream, "hello")
    link = await agent.online()
    await next_event(stream, "vault.status")
    _, vault = await fast.call("GET", f"/vaults/{agent.vault_id}", owner)
    await link.heartbeat()
    await _recorded(fast, owner, agent.vault_id, vault["last_heartbeat_at"])
    last_heartbeat = time.monotonic()
    await asyncio.sleep(0.3)
    await link.close()
    raised = await next_event(stream, "alert.raised", timeout=OFFLINE_AFTER + 4)
    elapsed = time.monotonic() - last_heartbeat
    assert raised["data"]["kind"] == "vault_offline"
    assert raised["data"]["vault_id"] == agent.vault_id
    assert OFFLINE_AFTER - 0.6 <= elapsed <= OFFLINE_AFTER + 2, elapsed
    status = await next_event(stream, "vault.status")
    assert status["data"] == {"vault_id": agent.vault_id, "status": "offline"}
    # it comes back: online, and the alert is resolved
    again = await agent.online()
    assert (await next_event(stream, "vault.status"))["data"]["status"] == "online"
    resolved = await next_event(stream, "alert.resolved")
    assert resolved["data"]["id"] == raised["data"]["id"]
    await again.close()
    await stream.close()


async def test_no_alert_when_the_vault_reconnects_in_time(fast: Api, tmp_path: Path) -> None:
    owner = await fast.org("Acme", "owner@acme.test")
    agent = await enroll(fast, owner, tmp_path / "agent")
    link = await agent.online()
    await link.heartbeat()
    await link.close()
    await asyncio.sleep(0.5)
    again = await agent.online()

    async def read() -> None:  # the client answers the gateway's pings only while reading
        while not again.ws.closed:
            await again.ws.receive()

    reader = asyncio.create_task(read())
    for _ in range(6):  # keep it alive past the first connection's deadline
        await again.heartbeat()
        await asyncio.sleep(0.5)
    _, alerts = await fast.call("GET", "/alerts", owner)
    assert alerts["items"] == []
    await again.close()
    await reader


async def test_dead_peer_found_by_pings(fast: Api, tmp_path: Path) -> None:
    owner = await fast.org("Acme", "owner@acme.test")
    agent = await enroll(fast, owner, tmp_path / "agent")
    stream = await fast.client.ws_connect(
        "/api/v1/stream", headers={"Authorization": f"Bearer {owner}"}
    )
    await next_event(stream, "hello")
    started = time.monotonic()
    link = await agent.online(autoping=False)  # never answers the gateway's pings
    raised = await next_event(stream, "alert.raised", timeout=OFFLINE_AFTER + 4)
    assert raised["data"]["kind"] == "vault_offline"
    assert time.monotonic() - started <= OFFLINE_AFTER + 2
    _, text = await fast.call("GET", "/metrics")
    assert "keyvault_cp_uplink_connections 0" in text
    await link.session.close()
    await stream.close()
