"""The operator stream, in one replica and across two replicas sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control_plane.app import build_app
from control_plane.views.context import CP
from tests.control_plane.conftest import PASSWORD, Api, Clock, make_settings
from tests.control_plane.test_policies_alerts import POLICY, new_vault


async def next_event(ws: Any, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next event of ``kind`` on the socket."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            doc = json.loads(msg.data)
            if doc["type"] == kind:
                return doc


async def test_stream_header_auth_and_events(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    other = await api.org("Other", "owner@other.test")
    ws = await api.client.ws_connect("/api/v1/stream", headers={"Authorization": f"Bearer {owner}"})
    hello = await next_event(ws, "hello")
    foreign = await api.client.ws_connect("/api/v1/stream")
    await foreign.send_json({"type": "auth", "token": other})
    await next_event(foreign, "hello")
    _status, pol = await api.call("POST", "/policies", owner, json=POLICY)
    event = await next_event(ws, "policy.created")
    assert event["org_id"] == hello["org_id"] and event["data"]["id"] == pol["id"]
    vid = await new_vault(api, owner)
    await api.cp.vaults.heartbeat(vid)
    assert (await next_event(ws, "vault.status"))["data"] == {"vault_id": vid, "status": "online"}
    api.clock.advance(120)
    await api.cp.vaults.sweep_offline()
    raised = await next_event(ws, "alert.raised")
    assert raised["data"]["vault_id"] == vid
    await api.call("POST", f"/alerts/{raised['data']['id']}/acknowledge", owner)
    assert (await next_event(ws, "alert.acknowledged"))["data"]["state"] == "acknowledged"
    await ws.send_json({"type": "ping"})
    await next_event(ws, "pong")
    # the other organisation saw none of it
    await foreign.send_json({"type": "ping"})
    msg = json.loads((await foreign.receive(timeout=5)).data)
    assert msg["type"] == "pong"
    await ws.close()
    await foreign.close()


async def test_stream_refuses_bad_tokens(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    status, body = await api.call("GET", "/stream", owner)  # no WebSocket upgrade
    assert status == 400 and body["error"]["code"] == "invalid_request"
    resp = await api.client.get("/api/v1/stream", headers={"Authorization": "Bearer kvs_nope"})
    assert resp.status == 401
    ws = await api.client.ws_connect("/api/v1/stream")
    await ws.send_json({"type": "auth", "token": "kvs_nope"})
    msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 4401


@pytest.mark.postgres
async def test_two_replicas_share_events_and_sweep_once(
    aiohttp_client: Any, tmp_path: Path, cp_pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    clock = Clock()
    prefix = redis_prefix
    apps = [
        build_app(make_settings("production", tmp_path, cp_pg_url, prefix), clock=clock)
        for _ in range(2)
    ]
    clients = [await aiohttp_client(app) for app in apps]
    a, b = (Api(c, app[CP], clock) for c, app in zip(clients, apps, strict=True))
    owner = await a.org("Acme", "owner@acme.test")
    ws = await b.client.ws_connect("/api/v1/stream", headers={"Authorization": f"Bearer {owner}"})
    await next_event(ws, "hello")
    status, pol = await a.call("POST", "/policies", owner, json=POLICY)
    assert status == 201
    assert (await next_event(ws, "policy.created"))["data"]["id"] == pol["id"]
    vids = [await new_vault(a, owner, f"v{i}") for i in range(5)]
    for vid in vids:
        await b.cp.vaults.heartbeat(vid)
    clock.advance(120)
    total = 0
    for _ in range(3):
        counts = await asyncio.gather(a.cp.vaults.sweep_offline(), b.cp.vaults.sweep_offline())
        total += sum(counts)
    assert total == len(vids)
    status, alerts = await b.call("GET", "/alerts?state=open", owner)
    assert sorted(x["vault_id"] for x in alerts["items"]) == sorted(vids)
    seen = [await next_event(ws, "alert.raised") for _ in vids]
    assert sorted(e["data"]["vault_id"] for e in seen) == sorted(vids)
    with pytest.raises(TimeoutError):
        await next_event(ws, "alert.raised", timeout=0.3)
    # the rate limit is shared too: failures on A lock the account on B
    creds = {"email": "owner@acme.test", "password": "not the password"}
    await a.call("POST", "/auth/login", json=creds)
    await b.call("POST", "/auth/login", json=creds)
    status, _ = await a.call("POST", "/auth/login", json=creds)
    assert status == 429
    status, _ = await b.call("POST", "/auth/login", json={**creds, "password": PASSWORD})
    assert status == 429
    await ws.close()


async def test_stream_closes_when_the_session_ends(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane.views import stream

    monkeypatch.setattr(stream, "RECHECK_SECONDS", 0.1)
    owner = await api.org("Acme", "owner@acme.test")
    ws = await api.client.ws_connect("/api/v1/stream")
    await ws.send_json({"type": "auth", "token": owner})
    await next_event(ws, "hello")
    assert (await api.call("POST", "/auth/logout", owner))[0] == 204
    msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 4401


async def test_every_event_on_the_wire_matches_the_contract(api: Api) -> None:
    """Real services publish; every message the operator socket carries decodes by the contract."""
    from common import events

    owner = await api.org("Acme", "owner@acme.test")
    ws = await api.client.ws_connect("/api/v1/stream", headers={"Authorization": f"Bearer {owner}"})
    await next_event(ws, "hello")
    _status, pol = await api.call("POST", "/policies", owner, json=POLICY)
    changed = {"interval_seconds": 7200}
    assert (await api.call("PUT", f"/policies/{pol['id']}", owner, json=changed))[0] == 200
    assert (await api.call("DELETE", f"/policies/{pol['id']}", owner))[0] == 204
    key = {"fingerprint": "sha256:" + "a" * 64}
    assert (await api.call("PUT", "/org/metadata-key", owner, json=key))[0] == 200
    vid = await new_vault(api, owner)
    await api.cp.vaults.heartbeat(vid)
    api.clock.advance(120)
    await api.cp.vaults.sweep_offline()
    _status, alerts = await api.call("GET", "/alerts", owner)
    alert_id = alerts["items"][0]["id"]
    assert (await api.call("POST", f"/alerts/{alert_id}/acknowledge", owner))[0] == 200
    assert (await api.call("POST", f"/alerts/{alert_id}/resolve", owner))[0] == 200
    expected = {
        events.POLICY_CREATED,
        events.POLICY_UPDATED,
        events.POLICY_DELETED,
        events.METADATA_KEY_CHANGED,
        events.VAULT_REGISTERED,
        events.VAULT_STATUS,
        events.ALERT_RAISED,
        events.ALERT_ACKNOWLEDGED,
        events.ALERT_RESOLVED,
    }
    seen: set[events.EventKind] = set()
    async with asyncio.timeout(10):
        while not expected <= seen:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            event = events.decode(msg.data)  # raises if the message breaks the contract
            assert event.org_id and event.at.endswith("Z")
            seen.add(event.kind)
    await ws.close()


async def _closed_with(ws: Any, code: int, timeout: float = 5.0) -> None:
    """Wait until the server closes ``ws`` and check the close code."""
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            seen.append((msg.type, msg.data, msg.extra))
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
    assert ws.close_code == code, seen


async def test_live_sessions_answers_for_many_tokens_at_once(api: Api) -> None:
    from control_plane.services.accounts import token_hash

    owner = await api.org("Acme", "owner@acme.test")
    second = await api.login("owner@acme.test")
    ended = await api.login("owner@acme.test")
    assert (await api.call("POST", "/auth/logout", ended))[0] == 204
    keys = {token_hash(t): t for t in (owner, second, ended, "kvs_unknown")}
    assert await api.cp.accounts.live_sessions(keys) == {token_hash(owner), token_hash(second)}
    assert await api.cp.accounts.live_sessions([]) == set()
    api.clock.advance(api.cp.settings.session_ttl_seconds + 1)  # every session has expired
    assert await api.cp.accounts.live_sessions(keys) == set()


@pytest.mark.postgres
async def test_logout_on_one_replica_closes_that_sessions_streams_on_both(
    aiohttp_client: Any,
    tmp_path: Path,
    cp_pg_url: str,
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One sweep per replica re-checks every stream's session: a logout on B closes the
    session's streams on A and B (4401) within the interval; another session's stream stays and
    still gets events; each replica's sweep asks once per interval for all its sessions."""
    from control_plane.views import stream

    monkeypatch.setattr(stream, "RECHECK_SECONDS", 0.2)
    clock = Clock()
    apps = [
        build_app(make_settings("production", tmp_path, cp_pg_url, redis_prefix), clock=clock)
        for _ in range(2)
    ]
    clients = [await aiohttp_client(app) for app in apps]
    a, b = (Api(c, app[CP], clock) for c, app in zip(clients, apps, strict=True))
    owner = await a.org("Acme", "owner@acme.test")
    other = await a.login("owner@acme.test")  # the same operator's second session
    calls: list[int] = []
    live_sessions = a.cp.accounts.live_sessions

    async def counted(keys: Any) -> set[str]:
        keys = list(keys)
        calls.append(len(keys))
        return await live_sessions(keys)

    monkeypatch.setattr(a.cp.accounts, "live_sessions", counted)
    bearer = {"Authorization": f"Bearer {owner}"}
    on_a = [await a.client.ws_connect("/api/v1/stream", headers=bearer) for _ in range(3)]
    on_b = await b.client.ws_connect("/api/v1/stream", headers=bearer)
    kept = await a.client.ws_connect("/api/v1/stream")
    await kept.send_json({"type": "auth", "token": other})
    for ws in (*on_a, on_b, kept):
        await next_event(ws, "hello")
    calls.clear()  # from here on every stream is registered
    await asyncio.sleep(0.5)  # a few sweeps while every session is live
    assert calls and set(calls) == {2}  # one statement for 4 streams of 2 sessions on A
    assert (await b.call("POST", "/auth/logout", owner))[0] == 204
    for ws in (*on_a, on_b):
        await _closed_with(ws, 4401)
    status, pol = await a.call("POST", "/policies", other, json=POLICY)
    assert status == 201
    assert (await next_event(kept, "policy.created"))["data"]["id"] == pol["id"]
    assert not kept.closed
    await kept.close()


async def test_stream_stays_open_while_its_session_cannot_be_checked(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed re-check (the database down) closes nothing; the next one that works does."""
    from common.errors import UnavailableError
    from control_plane.views import stream

    monkeypatch.setattr(stream, "RECHECK_SECONDS", 0.1)
    owner = await api.org("Acme", "owner@acme.test")
    failing = [0]

    async def down(_keys: Any) -> set[str]:
        failing[0] += 1
        raise UnavailableError("the database is unreachable")

    monkeypatch.setattr(api.cp.accounts, "live_sessions", down)
    ws = await api.client.ws_connect("/api/v1/stream", headers={"Authorization": f"Bearer {owner}"})
    await next_event(ws, "hello")
    assert (await api.call("POST", "/auth/logout", owner))[0] == 204
    while failing[0] < 3:
        await asyncio.sleep(0.05)
    await ws.send_json({"type": "ping"})
    await next_event(ws, "pong")  # still open
    monkeypatch.undo()
    monkeypatch.setattr(stream, "RECHECK_SECONDS", 0.1)
    await _closed_with(ws, 4401)


async def test_stream_of_an_expired_session_or_a_removed_user_is_closed(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane.views import stream

    monkeypatch.setattr(stream, "RECHECK_SECONDS", 0.1)
    owner = await api.org("Acme", "owner@acme.test")
    member = await api.member(owner, "dev@acme.test", "operator")
    expiring = await api.client.ws_connect(
        "/api/v1/stream", headers={"Authorization": f"Bearer {owner}"}
    )
    removed = await api.client.ws_connect(
        "/api/v1/stream", headers={"Authorization": f"Bearer {member}"}
    )
    await next_event(expiring, "hello")
    hello = await next_event(removed, "hello")
    assert (await api.call("DELETE", f"/users/{hello['user_id']}", owner))[0] == 204
    await _closed_with(removed, 4401)
    assert not expiring.closed
    api.clock.advance(api.cp.settings.session_ttl_seconds + 1)
    await _closed_with(expiring, 4401)


async def test_stream_that_fell_behind_is_closed_by_the_sweep(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_plane.views import stream

    monkeypatch.setattr(stream, "RECHECK_SECONDS", 0.1)
    owner = await api.org("Acme", "owner@acme.test")
    ws = await api.client.ws_connect("/api/v1/stream", headers={"Authorization": f"Bearer {owner}"})
    hello = await next_event(ws, "hello")
    (sub,) = api.cp.bus._hub._subs[hello["org_id"]]  # the stream's subscription
    sub.overflowed = True  # as the bus marks a subscription whose queue overflowed
    await _closed_with(ws, 4408)


async def test_stream_whose_queue_overflowed_is_closed_with_4408_by_its_forwarder(
    api: Api,
) -> None:
    """The socket's forwarder finds the overflow when it drains the queue; the task serving the
    socket closes it, so the client sees 4408 (not 1006) without waiting for a sweep."""
    owner = await api.org("Acme", "owner@acme.test")
    ws = await api.client.ws_connect("/api/v1/stream", headers={"Authorization": f"Bearer {owner}"})
    hello = await next_event(ws, "hello")
    (sub,) = api.cp.bus._hub._subs[hello["org_id"]]
    sub.overflowed = True  # as the bus marks a subscription whose queue overflowed
    sub.queue.put_nowait('{"type": "ping"}')  # wakes the forwarder (RECHECK_SECONDS is 15 s)
    await _closed_with(ws, 4408, timeout=3)
