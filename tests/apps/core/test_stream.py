"""LiveStream against the real control plane, and against a small WebSocket server that drops."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
from websockets.asyncio.server import ServerConnection, serve

from apps.core.stream import SESSION_EXPIRED, LiveStream, backoff_delays, stream_url
from tests.apps.conftest import LiveControlPlane


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``check()`` holds (polling the event loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


class Recorder:
    """What a stream reported."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.status: list[bool] = []

    def stream(self, url: str, token: str, **kw: Any) -> LiveStream:
        return LiveStream(
            url,
            token,
            on_event=lambda k, d: self.events.append((k, d)),
            on_status=self.status.append,
            **kw,
        )


def test_urls_and_backoff() -> None:
    assert stream_url("http://127.0.0.1:8080/") == "ws://127.0.0.1:8080/api/v1/stream"
    assert stream_url("https://cp.example.com") == "wss://cp.example.com/api/v1/stream"
    delays = backoff_delays(0.5, 30.0)
    assert [next(delays) for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    stream = LiveStream("https://cp.example.com", "kvs_secret-token")
    assert "kvs_secret-token" not in repr(stream) and stream._ssl is not None


async def test_receives_real_events_from_the_control_plane(live_cp: LiveControlPlane) -> None:
    token = await asyncio.to_thread(live_cp.token)
    rec = Recorder()
    stream = rec.stream(live_cp.url, token)
    task = asyncio.create_task(stream.run())
    await until(lambda: rec.status == [True])
    assert stream.online and stream.last_error is None
    policy = {
        "name": "db-monthly",
        "selector": {"name_glob": "prod/*"},
        "interval_seconds": 30 * 86400,
        "rotator": {"type": "random", "settings": {}},
    }
    resp = await asyncio.to_thread(
        httpx.post,
        live_cp.url + "/api/v1/policies",
        json=policy,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 201, resp.text
    await until(lambda: any(k == "policy.created" for k, _ in rec.events))
    kind, data = rec.events[-1]
    assert kind == "policy.created" and data["id"] == resp.json()["id"]
    assert data["name"] == "db-monthly"
    await stream.stop()
    assert task.done() and task.exception() is None
    assert rec.status == [True, False] and not stream.online


async def test_a_bad_token_stops_with_a_clear_error(live_cp: LiveControlPlane) -> None:
    rec = Recorder()
    stream = rec.stream(live_cp.url, "kvs_not-a-real-session")
    await asyncio.wait_for(stream.run(), 10)  # returns by itself: no retry loop
    assert stream.last_error == SESSION_EXPIRED and rec.status == [False]
    assert "kvs_not-a-real-session" not in (stream.last_error or "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_reconnects_after_the_server_drops_it() -> None:
    seen_auth: list[str | None] = []

    async def handler(ws: ServerConnection) -> None:
        seen_auth.append(ws.request.headers.get("Authorization") if ws.request else None)
        await ws.send(json.dumps({"type": "hello", "org_id": "org_1", "user_id": "usr_1"}))
        data = {"vault_id": "vlt_1", "status": "online"}
        await ws.send(json.dumps({"type": "vault.status", "org_id": "org_1", "data": data}))
        await ws.send(json.dumps({"type": "alert.raised", "org_id": "org_1", "data": {"id": "a"}}))
        # the retired second shape is refused (one shape only: common.events), not delivered
        await ws.send(json.dumps({"type": "event", "kind": "alert.raised", "data": {"id": "b"}}))
        await ws.send("not json")
        await ws.send(json.dumps({"type": "pong"}))
        if len(seen_auth) == 1:
            await ws.close(1011, "going down")
            return
        await ws.wait_closed()

    rec = Recorder()
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        stream = rec.stream(f"http://127.0.0.1:{port}", "kvs_tok", initial_delay=0.05)
        task = asyncio.create_task(stream.run())
        await until(lambda: rec.status == [True, False, True])
        await until(lambda: len(rec.events) == 4)
        await stream.stop()
        await task
    assert seen_auth == ["Bearer kvs_tok", "Bearer kvs_tok"]
    assert rec.events[:2] == [
        ("vault.status", {"vault_id": "vlt_1", "status": "online"}),
        ("alert.raised", {"id": "a"}),
    ]
    assert stream.connections == 2 and rec.status == [True, False, True, False]
    assert stream.refused == 4  # per connection: the retired shape and the non-JSON message


async def test_close_4401_stops_retrying() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "hello"}))
        await ws.close(4401, "session ended")

    rec = Recorder()
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        stream = rec.stream(f"http://127.0.0.1:{port}", "kvs_tok", initial_delay=0.01)
        await asyncio.wait_for(stream.run(), 10)
    assert stream.last_error == SESSION_EXPIRED and rec.status == [True, False]
    assert stream.connections == 1


async def test_unreachable_reports_offline_keeps_trying_and_stops() -> None:
    rec = Recorder()
    url = f"http://127.0.0.1:{free_port()}"
    stream = rec.stream(url, "kvs_tok", initial_delay=0.01, max_delay=0.05)
    task = asyncio.create_task(stream.run())
    await until(lambda: stream.last_error is not None)
    assert rec.status == [False]
    assert (stream.last_error or "").startswith("cannot reach the live stream at ws://127.0.0.1:")
    await asyncio.sleep(0.2)  # several attempts, still one report
    assert rec.status == [False] and not task.done()
    await asyncio.wait_for(stream.stop(), 5)
    assert task.done()


async def test_a_failing_listener_does_not_kill_the_stream() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(json.dumps({"type": "hello"}))
        for n in range(2):
            await ws.send(json.dumps({"type": "policy.deleted", "data": {"id": f"p{n}"}}))
        await ws.wait_closed()

    got: list[str] = []

    def listener(kind: str, data: dict[str, Any]) -> None:
        got.append(data["id"])
        if data["id"] == "p0":
            raise RuntimeError("listener bug")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        stream = LiveStream(f"http://127.0.0.1:{port}", "kvs_tok", on_event=listener)
        task = asyncio.create_task(stream.run())
        await until(lambda: got == ["p0", "p1"])
        assert stream.online
        await stream.stop()
        await task
