"""Commands to vault agents: the operator API, delivery on connect and live (in one replica and
routed through Redis from a second replica sharing PostgreSQL), results, and the fleet link
across two replicas (policy pushes, takeover)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common import uplink
from control_plane.app import build_app
from control_plane.gateway.app import GATEWAY
from control_plane.settings import ControlPlaneSettings
from control_plane.views.context import CP
from tests.control_plane.conftest import Api, Clock
from tests.control_plane.mock_agent import Enrolled, enroll, event
from tests.control_plane.test_policies_alerts import POLICY, new_vault
from tests.control_plane.test_stream import next_event

ROTATE = {"command": "rotate", "args": {"secret_id": "sec_a"}}


async def _state(api: Api, token: str, command_id: str, want: str) -> dict[str, Any]:
    for _ in range(250):
        status, body = await api.call("GET", f"/commands/{command_id}", token)
        assert status == 200, body
        if body["state"] == want:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"command stayed {body['state']}, wanted {want}")


async def test_command_api_validation_and_tenancy(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    viewer = await api.member(owner, "viewer@acme.test", "viewer")
    vid = await new_vault(api, owner)
    bad: list[Any] = [
        {},
        {"command": "explode"},
        {"command": {}},  # unhashable: once a 500
        {"command": ["rotate"]},
        {"command": "rotate"},
        {"command": "rotate", "args": {}},
        {"command": "rotate", "args": {"secret_id": "has space"}},
        {"command": "rotate", "args": {"secret_id": "sec_a", "value": "hunter2"}},
        {"command": "resync", "args": {"full": True}},
        {"command": "resync", "args": []},
        {"command": "resync", "extra": 1},
    ]
    for doc in bad:
        status, body = await api.call("POST", f"/vaults/{vid}/commands", owner, json=doc)
        assert status == 400, (doc, body)
    status, created = await api.call("POST", f"/vaults/{vid}/commands", owner, json=ROTATE)
    assert status == 202, created
    assert created["state"] == "pending" and created["args"] == {"secret_id": "sec_a"}
    assert created["id"].startswith("cmd_") and created["vault_id"] == vid
    status, second = await api.call(
        "POST", f"/vaults/{vid}/commands", owner, json={"command": "resync", "args": {}}
    )
    assert status == 202
    status, page = await api.call("GET", f"/vaults/{vid}/commands?limit=1", viewer)
    assert status == 200 and [c["id"] for c in page["items"]] == [created["id"]]
    _, rest = await api.call("GET", f"/vaults/{vid}/commands?cursor={page['next_cursor']}", viewer)
    assert [c["id"] for c in rest["items"]] == [second["id"]] and rest["next_cursor"] is None
    assert (await api.call("GET", f"/commands/{created['id']}", viewer))[1] == created
    assert (await api.call("POST", f"/vaults/{vid}/commands", viewer, json=ROTATE))[0] == 403
    assert (await api.call("POST", "/vaults/vlt_nope/commands", owner, json=ROTATE))[0] == 404
    other = await api.org("Globex", "owner@globex.test")
    assert (await api.call("GET", f"/commands/{created['id']}", other))[0] == 404
    assert (await api.call("GET", f"/vaults/{vid}/commands", other))[0] == 404
    assert (await api.call("POST", f"/vaults/{vid}/commands", other, json=ROTATE))[0] == 404
    await api.call("POST", f"/vaults/{vid}/revoke", owner)
    status, body = await api.call("POST", f"/vaults/{vid}/commands", owner, json=ROTATE)
    assert status == 409 and body["error"]["code"] == "conflict"


async def test_pending_command_sent_on_connect_and_result(api: Api, tmp_path: Path) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    agent = await enroll(api, owner, tmp_path / "agent")
    _, first = await api.call("POST", f"/vaults/{agent.vault_id}/commands", owner, json=ROTATE)
    _, second = await api.call(
        "POST", f"/vaults/{agent.vault_id}/commands", owner, json={"command": "resync"}
    )
    stream = await api.client.ws_connect(
        "/api/v1/stream", headers={"Authorization": f"Bearer {owner}"}
    )
    await next_event(stream, "hello")
    link = await agent.connect()
    await link.send(
        {"type": "hello", "protocol": 1, "vault_id": agent.vault_id, "agent_version": "0.1.0"}
    )
    kinds = [(await link.recv())["type"] for _ in range(2)]
    assert kinds == ["welcome", "policies"]
    got = [await link.recv() for _ in range(2)]  # oldest first, right after the policies
    assert got == [
        {"type": "command", "id": first["id"], "command": "rotate", "args": {"secret_id": "sec_a"}},
        {"type": "command", "id": second["id"], "command": "resync", "args": {}},
    ]
    await _state(api, owner, first["id"], "sent")
    result = {
        "command_id": first["id"],
        "outcome": "ok",
        "message": "rotated",
        "secret_id": "sec_a",
        "version": 2,
    }
    failed = {"command_id": second["id"], "outcome": "failed", "message": "store busy"}
    batch = [event(1, "command_result", result), event(2, "command_result", failed)]
    assert (await link.events("outbox", batch))["upto"] == 2
    published = await next_event(stream, "command.result")
    assert published["data"]["id"] == first["id"] and published["data"]["state"] == "succeeded"
    assert published["data"]["version"] == 2
    assert (await next_event(stream, "command.result"))["data"]["state"] == "failed"
    done = await _state(api, owner, first["id"], "succeeded")
    assert done["result"] == "rotated"
    assert (await _state(api, owner, second["id"], "failed"))["result"] == "store busy"
    # a redelivered result changes nothing and publishes nothing
    await link.events("outbox", batch)
    await stream.send_json({"type": "ping"})
    assert (await next_event(stream, "pong"))["type"] == "pong"
    # a result for a command of another vault is ignored
    foreign = {"command_id": "cmd_someone_else", "outcome": "ok"}
    assert (await link.events("outbox", [event(3, "command_result", foreign)]))["upto"] == 3
    # finished commands are not sent again on the next connect
    await link.close()
    again = await agent.online()
    await again.heartbeat()
    with pytest.raises(TimeoutError):
        await again.recv("command", timeout=0.5)
    await again.close()
    await stream.close()


async def test_live_command_reaches_connected_agent(api: Api, tmp_path: Path) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    agent = await enroll(api, owner, tmp_path / "agent")
    link = await agent.online()
    _, created = await api.call("POST", f"/vaults/{agent.vault_id}/commands", owner, json=ROTATE)
    frame = await link.recv("command")
    assert frame["id"] == created["id"]
    await _state(api, owner, created["id"], "sent")
    await link.close()


async def _replica(aiohttp_client: Any, settings: ControlPlaneSettings) -> Api:
    app = build_app(settings, clock=Clock())
    client = await aiohttp_client(app)
    return Api(client, app[CP], Clock(), gateway=app[GATEWAY])


@pytest.mark.parametrize("mode", ["production"])
async def test_two_replicas_route_commands_and_policies_through_redis(
    aiohttp_client: Any,
    settings_factory: Callable[..., ControlPlaneSettings],
    tmp_path: Path,
    mode: str,
) -> None:
    one = await _replica(aiohttp_client, settings_factory())
    two = await _replica(aiohttp_client, settings_factory())
    assert one.cp.redis is not None and one.gateway and two.gateway
    assert one.gateway.port != two.gateway.port
    owner_one = await one.org("Acme", "owner@acme.test")
    owner_two = await two.login("owner@acme.test")
    agent = await enroll(one, owner_one, tmp_path / "agent")
    link = await agent.online()  # held by replica one
    _, created = await two.call(
        "POST", f"/vaults/{agent.vault_id}/commands", owner_two, json=ROTATE
    )
    frame = await link.recv("command")
    assert frame["id"] == created["id"]
    await _state(two, owner_two, created["id"], "sent")
    # a policy change made on replica two is pushed by replica one
    _, pol = await two.call("POST", "/policies", owner_two, json=POLICY)
    assert [p["id"] for p in (await link.recv("policies"))["policies"]] == [pol["id"]]
    # the vault connects to replica two: replica one's socket is replaced (4409)
    moved = Enrolled(agent.vault_id, two.gateway.url, agent.folder, agent.service_ca_pem)
    link_two = await moved.online()
    # the unfinished (sent, no result yet) command is sent again on connect
    assert (await link_two.recv("command"))["id"] == created["id"]
    code, _ = await link.closed()
    assert code == uplink.CLOSE_REPLACED
    await link.close()
    _, again = await one.call(
        "POST", f"/vaults/{agent.vault_id}/commands", owner_one, json={"command": "resync"}
    )
    assert (await link_two.recv("command"))["id"] == again["id"]
    await link_two.close()
