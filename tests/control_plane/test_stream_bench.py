"""The stream benchmark's raw WebSocket client: frames of every length, pings, the hello."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from bench.stream import Listener, RawClient, _event_name


async def test_raw_client_reads_every_frame_size_and_answers_pings(aiohttp_server: Any) -> None:
    pongs: list[bytes] = []
    names = ["small", "m" * 200, "l" * 70_000]  # 7-bit, 16-bit and 64-bit payload lengths

    async def stream(request: web.Request) -> web.WebSocketResponse:
        assert request.headers["Authorization"] == "Bearer kvs_x"
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await ws.send_json({"type": "hello"})  # no name: not an event
        await ws.ping(b"are you there")
        msg = await ws.receive()
        assert msg.type == WSMsgType.PONG
        pongs.append(msg.data)
        for name in names:
            await ws.send_str(json.dumps({"type": "policy.created", "data": {"name": name}}))
        await ws.receive()  # until the client goes away
        return ws

    app = web.Application()
    app.router.add_get("/stream", stream)
    server = await aiohttp_server(app)
    listener = Listener("raw", batch=2)
    url = f"http://127.0.0.1:{server.port}/stream"
    await listener.connect(None, url, 3, {"Authorization": "Bearer kvs_x"}, "t")  # type: ignore[arg-type]
    for name in names:
        arrivals = await listener.wait_for(name, 3, timeout=10)
        assert [tag for tag, _ in arrivals] == ["t", "t", "t"]
    assert pongs == [b"are you there"] * 3
    await listener.close()


async def test_raw_client_refused_upgrade_fails_its_connect(aiohttp_server: Any) -> None:
    async def refuse(_request: web.Request) -> web.Response:
        return web.json_response({"error": "no"}, status=401)

    app = web.Application()
    app.router.add_get("/stream", refuse)
    server = await aiohttp_server(app)
    loop = asyncio.get_running_loop()
    request = RawClient.upgrade_request(f"127.0.0.1:{server.port}", "/stream", {})
    _, proto = await loop.create_connection(
        lambda: RawClient(request, lambda *_: None), "127.0.0.1", server.port
    )
    try:
        await asyncio.wait_for(proto.ready, 10)
    except ConnectionError as exc:
        assert "401" in str(exc)
    else:
        raise AssertionError("a refused upgrade must fail")


def test_event_name() -> None:
    assert _event_name(b'{"type": "x", "data": {"name": "n"}}') == "n"
    assert _event_name('{"type": "hello", "org_id": "o"}') is None
    assert _event_name(b"[1]") is None


@pytest.mark.postgres
async def test_probe_stamps_every_step_of_a_policy_event_in_order(
    aiohttp_client: Any, tmp_path: Path, cp_pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """``bench.stream --probe``: one record per POST /policies, every step stamped, in the
    order the request goes through them; other requests are not recorded."""
    from bench import stream_probe
    from control_plane.app import build_app
    from control_plane.views.context import CP
    from tests.control_plane.conftest import Api, Clock, make_settings
    from tests.control_plane.test_policies_alerts import POLICY

    out = tmp_path / "probe.jsonl"
    uninstall = stream_probe.install(str(out))
    try:
        app = build_app(make_settings("production", tmp_path, cp_pg_url, redis_prefix))
        client = await aiohttp_client(app)
        api = Api(client, app[CP], Clock())
        owner = await api.org("Acme", "owner@acme.test")
        for name in ("one", "two"):
            status, _ = await api.call("POST", "/policies", owner, json={**POLICY, "name": name})
            assert status == 201
        assert (await api.call("GET", "/policies", owner))[0] == 200
    finally:
        uninstall()
    rows = stream_probe.load(str(out))
    assert len(rows) == 2
    for row in rows:
        stamps = [row[step] for step in stream_probe.STEPS]
        assert stamps == sorted(stamps)
