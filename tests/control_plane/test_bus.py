"""The event bus: per-organisation fan-out, bounded queues, Redis across two buses."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from control_plane import bus as bus_module
from control_plane.bus import InProcessBus, RedisBus


async def test_in_process_fan_out_per_org(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus_module, "QUEUE_SIZE", 3)
    bus = InProcessBus()
    a1, a2, b = bus.subscribe("org_a"), bus.subscribe("org_a"), bus.subscribe("org_b")
    assert bus.subscribers == 3
    await bus.publish({"type": "x", "org_id": "org_a", "data": {}})
    assert json.loads(await a1.get())["type"] == "x"
    assert json.loads(await a2.get())["type"] == "x"
    assert b.queue.empty()
    for i in range(4):  # a1 and a2 never read: the fourth overflows them
        await bus.publish({"type": f"n{i}", "org_id": "org_a", "data": {}})
    assert a1.overflowed and a2.overflowed and bus.subscribers == 1
    b.close()
    assert bus.subscribers == 0


async def test_redis_bus_crosses_instances(redis_url: str, redis_prefix: str) -> None:
    r1, r2, r3 = (Redis.from_url(redis_url) for _ in range(3))
    one, two = RedisBus(r1, redis_prefix), RedisBus(r2, redis_prefix)
    other = RedisBus(r3, redis_prefix + "-elsewhere")
    await one.start()
    await two.start()
    await other.start()
    try:
        with two.subscribe("org_a") as sub, other.subscribe("org_a") as stranger:
            await one.publish({"type": "hello", "org_id": "org_a", "data": {"n": 1}})
            event = json.loads(await asyncio.wait_for(sub.get(), 5))
            assert event["data"] == {"n": 1}
            await asyncio.sleep(0.1)
            assert stranger.queue.empty()  # another deployment's prefix hears nothing
        with one.subscribe("org_a") as mine, two.subscribe("org_a") as theirs:
            await one.publish({"type": "local", "org_id": "org_a", "data": {}})
            # the publishing replica's subscribers have it at once, not from Redis's echo
            assert json.loads(mine.queue.get_nowait())["type"] == "local"
            assert json.loads(await asyncio.wait_for(theirs.get(), 5))["type"] == "local"
            await asyncio.sleep(0.2)
            assert mine.queue.empty()  # Redis's echo of its own event is not delivered twice
    finally:
        for b in (one, two, other):
            await b.close()
        for client in (r1, r2, r3):
            await client.aclose()


async def test_redis_publish_fans_out_before_reading_the_reply(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, listener = Redis.from_url(redis_url), Redis.from_url(redis_url)
    one, two = RedisBus(client, redis_prefix), RedisBus(listener, redis_prefix)
    await one.start()
    await two.start()
    pool = client.connection_pool
    get_connection = pool.get_connection
    queued_at_reply: list[int] = []
    wrapped: list[object] = []

    async def watched(*args: object, **kwargs: object) -> object:
        conn = await get_connection(*args, **kwargs)
        if conn in wrapped:  # the pool hands the same connection out again
            return conn
        wrapped.append(conn)
        read = conn.read_response

        async def read_response(*a: object, **k: object) -> object:
            queued_at_reply.append(mine.queue.qsize())
            return await read(*a, **k)

        monkeypatch.setattr(conn, "read_response", read_response)
        return conn

    try:
        with one.subscribe("org_a") as mine, two.subscribe("org_a") as theirs:
            monkeypatch.setattr(pool, "get_connection", watched)
            for n in range(3):
                await one.publish({"type": "t", "org_id": "org_a", "data": {"n": n}})
            # the local subscriber had each event before Redis's reply was read
            assert queued_at_reply == [1, 2, 3]
            for n in range(3):
                assert json.loads(mine.queue.get_nowait())["data"] == {"n": n}
                assert json.loads(await asyncio.wait_for(theirs.get(), 5))["data"] == {"n": n}
            # every reply was read: the pooled connection answers the next command correctly
            assert await client.get(f"{redis_prefix}:absent") is None
            assert await client.publish(f"{redis_prefix}:nobody", "x") == 0
    finally:
        await one.close()
        await two.close()
        await client.aclose()
        await listener.aclose()


async def test_redis_publish_with_redis_down_delivers_locally(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    bus = RedisBus(client, "kvtest-down")
    try:
        with bus.subscribe("org_a") as sub:
            await bus.publish({"type": "t", "org_id": "org_a", "data": {}})
            assert json.loads(sub.queue.get_nowait())["type"] == "t"
            assert sub.queue.empty()  # exactly once
        assert "delivering locally only" in caplog.text
    finally:
        await client.aclose()
