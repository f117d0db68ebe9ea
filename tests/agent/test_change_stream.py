"""The change stream: ``GET /api/v1/changes`` and the in-process ``ChangeFeed.subscribe()``.

Events carry name, id, version and what happened, never a value; a token sees only the names it
may read; a subscriber that falls behind gets one ``resync`` and never slows a writer.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from agent.api import workload_views
from agent.changes import ChangeFeed, SecretChange
from tests.agent.conftest import Api

S = "/api/v1/secrets"


class Stream:
    """An open change stream read event by event."""

    def __init__(self, resp: Any) -> None:
        self.resp = resp
        self.comments: list[str] = []

    async def next(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
        event, data = "", ""
        while True:
            line = (await asyncio.wait_for(self.resp.content.readline(), timeout)).decode()
            if line.startswith(":"):
                self.comments.append(line.strip())
                continue
            line = line.rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and data:
                return event, json.loads(data)
            elif line == "" and self.resp.content.at_eof():
                raise EOFError


async def open_stream(api: Api, token: str, query: str = "") -> Stream:
    resp = await api.client.get(f"/api/v1/changes{query}", headers=api.auth(token))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    stream = Stream(resp)
    line = await asyncio.wait_for(resp.content.readline(), 5)  # the opening comment
    assert line.startswith(b":")
    return stream


async def test_events_for_readable_names_only_and_never_values(api: Api) -> None:
    reader = await api.token(("app/**", ["read"]))
    lister = await api.token(("other/**", ["list"]))  # may list, may not read: sees nothing
    stream = await open_stream(api, reader)
    silent = await open_stream(api, lister)
    _, created = await api.call("POST", S, json={"name": "app/db", "value": "s3cr3t-one"})
    await api.call("POST", S, json={"name": "other/x", "value": "s3cr3t-two"})
    await api.call("PUT", f"{S}/app%2Fdb", json={"value": "s3cr3t-three"})
    await api.call("POST", f"{S}/app%2Fdb/rotate")
    await api.call("DELETE", f"{S}/app%2Fdb")
    await api.call("POST", f"{S}/app%2Fdb/destroy")
    seen = [await stream.next() for _ in range(5)]
    sid = created["id"]
    assert seen == [
        ("created", {"name": "app/db", "id": sid, "version": 1, "event": "created"}),
        ("updated", {"name": "app/db", "id": sid, "version": 2, "event": "updated"}),
        ("rotated", {"name": "app/db", "id": sid, "version": 3, "event": "rotated"}),
        ("deleted", {"name": "app/db", "id": sid, "version": 3, "event": "deleted"}),
        ("destroyed", {"name": "app/db", "id": sid, "version": 3, "event": "destroyed"}),
    ]
    with pytest.raises(TimeoutError):
        await silent.next(timeout=0.5)
    stream.resp.close()
    silent.resp.close()


async def test_names_filter_and_bad_input(api: Api) -> None:
    stream = await open_stream(api, api.dir.token, "?names=app/a,app/c")
    for name in ("app/a", "app/b", "app/c"):
        await api.call("POST", S, json={"name": name, "value": "v"})
    assert (await stream.next())[1]["name"] == "app/a"
    assert (await stream.next())[1]["name"] == "app/c"
    stream.resp.close()
    status, body = await api.call("GET", "/api/v1/changes?names=bad//name")
    assert status == 400 and "name" in body["error"]["message"]
    status, body = await api.call("GET", "/api/v1/changes?since=3")
    assert status == 400 and "unknown query parameter" in body["error"]["message"]
    status, body = await api.call("GET", "/api/v1/changes", token="kvt_nope")
    assert status == 401


async def test_heartbeats_and_a_revoked_token_ends_its_stream(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workload_views, "HEARTBEAT_S", 0.2)
    status, made = await api.call(
        "POST",
        "/api/v1/sys/tokens",
        json={"name": "w", "policy": [{"path": "**", "capabilities": ["read"]}]},
    )
    assert status == 201
    stream = await open_stream(api, made["token"])
    await asyncio.sleep(0.7)
    await api.call("DELETE", f"/api/v1/sys/tokens/{made['info']['id']}")
    event, body = await stream.next(timeout=5)
    assert event == "end" and body == {"reason": "token"}
    assert ": heartbeat" in stream.comments


async def test_a_slow_subscriber_gets_resync_and_never_blocks_writers() -> None:
    feed = ChangeFeed()
    slow = feed.subscribe(cap=3)
    fast = feed.subscribe(cap=100)
    started = time.perf_counter()
    for v in range(1, 51):
        feed.committed(SecretChange("a", "sec_x", v, "updated"))
    assert time.perf_counter() - started < 0.5  # offering never waits on a reader
    await asyncio.sleep(0)
    got = []
    while not slow._queue.empty():
        got.append(await slow.get())
    assert got[0].event == "resync" and slow.dropped >= 1 and len(got) <= 3
    assert [c.version for c in [await fast.get() for _ in range(50)]] == list(range(1, 51))
    feed.end_all()
    assert [c async for c in fast] == []  # an ended subscription's iterator finishes
    slow.close()
    fast.close()
    assert feed.subscribers == 0


async def test_in_process_subscription_sees_service_writes(api: Api) -> None:
    async with api.agent.secrets.feed.subscribe() as sub:
        await api.agent.secrets.create("t/one", "value-1")
        await api.agent.secrets.update("t/one", value="value-2")
        first, second = await sub.get(), await sub.get()
    assert (first.event, second.event) == ("created", "updated")
    assert second.version == 2 and "value" not in json.dumps(second.to_json())
    assert api.agent.secrets.feed.subscribers == 0
