"""Agents connecting at the same time share statements (``control_plane.db.Batcher``), on SQLite
and PostgreSQL: each still gets its own generation, its own vault's row, its organisation's
policies and its own unfinished commands; the first heartbeat learns from its batch whether an
offline alert waits to be resolved."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from common import uplink
from control_plane.db import Batcher, driver
from control_plane.errors import UplinkRefusedError
from control_plane.services.presence import _PG_HEARTBEATS
from tests.control_plane.conftest import Api
from tests.control_plane.mock_agent import enroll, org_id
from tests.control_plane.test_commands import ROTATE
from tests.control_plane.test_heartbeat_batch import _vault
from tests.control_plane.test_policies_alerts import POLICY
from tests.control_plane.test_stream import next_event


def _spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    return asyncio.get_running_loop().create_task(coro, name=name)


class _Recorder:
    """A batch function that records the batches it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[dict[str, int]] = []
        self.fail = fail
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, batch: dict[str, int]) -> dict[str, int]:
        self.batches.append(dict(batch))
        await self.gate.wait()
        if self.fail:
            raise OSError("database down")
        return {k: v * 10 for k, v in batch.items() if k != "missing"}


async def test_batcher_groups_what_queues_while_a_batch_runs() -> None:
    run = _Recorder()
    batcher: Batcher[str, int, int] = Batcher(run, _spawn, "test", share=True)
    assert await batcher("a", 1) == 10  # a lone call runs at once
    run.gate.clear()
    first = asyncio.ensure_future(batcher("a", 1))
    while len(run.batches) < 2:  # the second batch is running, held at the gate
        await asyncio.sleep(0)
    more = asyncio.gather(batcher("b", 2), batcher("a", 3), batcher("a", 5), batcher("missing", 4))
    await asyncio.sleep(0)
    run.gate.set()
    # the calls made meanwhile go together in the next batch; "a" asked twice in it shares one
    # answer (the first argument's), and a key the batch left out gets None
    assert await first == 10
    assert await more == [20, 30, 30, None]
    assert run.batches == [{"a": 1}, {"a": 1}, {"b": 2, "a": 3, "missing": 4}]


async def test_batcher_without_sharing_runs_a_repeated_key_in_a_later_batch() -> None:
    run = _Recorder()
    batcher: Batcher[str, int, int] = Batcher(run, _spawn, "test", share=False)
    results = await asyncio.gather(batcher("a", 1), batcher("b", 2), batcher("a", 3))
    assert results == [10, 20, 30]
    assert run.batches == [{"a": 1, "b": 2}, {"a": 3}]


async def test_batcher_fails_a_batch_and_runs_the_next_one() -> None:
    run = _Recorder(fail=True)
    batcher: Batcher[str, int, int] = Batcher(run, _spawn, "test", share=True)
    results = await asyncio.gather(batcher("a", 1), batcher("b", 2), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    run.fail = False
    assert await batcher("a", 1) == 10


async def test_batcher_spares_the_others_when_one_caller_is_cancelled() -> None:
    run = _Recorder()
    run.gate.clear()
    batcher: Batcher[str, int, int] = Batcher(run, _spawn, "test", share=True)
    one = asyncio.ensure_future(batcher("a", 1))
    two = asyncio.ensure_future(batcher("a", 1))
    await asyncio.sleep(0)
    one.cancel()
    await asyncio.sleep(0)
    run.gate.set()
    assert await two == 10
    with pytest.raises(asyncio.CancelledError):
        await one


async def test_concurrent_connects_share_one_statement_and_keep_their_generations(
    api: Api,
) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    a, b, c = [await _vault(api, owner, f"vault-{i}") for i in range(3)]
    assert (await api.call("POST", f"/vaults/{c.id}/revoke", owner))[0] == 200
    presence = api.cp.presence
    batches: list[list[str]] = []
    run = presence._connects._run

    async def counted(batch: dict[str, Any]) -> dict[str, Any]:
        batches.append(list(batch))
        return await run(batch)

    presence._connects._run = counted  # type: ignore[method-assign]
    results = await asyncio.gather(
        presence.connect(a, "0.1.0"),
        presence.connect(b, "0.2.0"),
        presence.connect(c, "0.1.0"),
        presence.connect(a, "0.1.0"),  # the same vault again: its own, newer generation
        return_exceptions=True,
    )
    assert batches == [[a.id, b.id, c.id], [a.id]]
    first_a, gen_b, refused, second_a = results
    assert isinstance(refused, UplinkRefusedError) and refused.code == uplink.ERR_REVOKED
    assert not isinstance(first_a, BaseException) and not isinstance(second_a, BaseException)
    assert not isinstance(gen_b, BaseException)
    assert second_a.gen == first_a.gen + 1
    assert gen_b.gen == 1 and gen_b.audit_head == (1, 0) and not gen_b.offline_alert
    # only the newest connection of a counts
    assert not await presence.heartbeat(a.id, first_a.gen, {})
    assert await presence.heartbeat(a.id, second_a.gen, {})


async def test_concurrent_identify_reads_share_one_statement(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    a, b = [await _vault(api, owner, f"vault-{i}") for i in range(2)]
    rows = await asyncio.gather(
        *(api.cp.presence._rows(v, None) for v in (a.id, b.id, a.id, "vlt_" + "x" * 26))
    )
    assert [r.id if r is not None else None for r in rows] == [a.id, b.id, a.id, None]
    assert rows[0] is rows[2]
    assert rows[0].org_id == a.org_id and rows[0].metadata_key_fingerprint is None


async def test_connect_reads_of_several_vaults_and_organisations(api: Api) -> None:
    one = await api.org("Acme", "owner@acme.test")
    two = await api.org("Other", "owner@other.test")
    a, b = [await _vault(api, one, f"vault-{i}") for i in range(2)]
    c = await _vault(api, two, "vault-c")
    assert (await api.call("POST", "/policies", one, json=POLICY))[0] == 201
    for _ in range(2):
        assert (await api.call("POST", f"/vaults/{a.id}/commands", one, json=ROTATE))[0] == 202
    policies = await api.cp.policies.for_uplinks({a.org_id: None, c.org_id: None})
    assert policies == {
        a.org_id: await api.cp.policies.for_uplink(a.org_id),
        c.org_id: [],
    }
    assert len(policies[a.org_id]) == 1
    pending = await api.cp.commands.unfinished_of({a.id: None, b.id: None, c.id: None})
    assert pending == {a.id: await api.cp.commands.unfinished_frames(a.id), b.id: [], c.id: []}
    assert [f["type"] for f in pending[a.id]] == ["command", "command"]
    assert pending[a.id][0]["id"] < pending[a.id][1]["id"]  # oldest first


async def test_a_heartbeat_tells_whether_an_offline_alert_waits(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    a = await _vault(api, owner, "vault-a")
    presence = api.cp.presence
    gen = (await presence.connect(a, "0.1.0")).gen
    assert await presence.beat(a.id, gen, {}) == (True, False)
    assert await api.cp.vaults.raise_offline(a.org_id, a.id, "vault-a disconnected")
    assert await presence.beat(a.id, gen, {}) == (True, True)
    assert await presence.beat(a.id, gen - 1, {}) == (False, False)
    await api.cp.alerts.resolve_key(a.org_id, f"vault_offline:{a.id}")
    assert await presence.beat(a.id, gen, {}) == (True, False)


async def test_first_heartbeat_resolves_an_alert_raised_while_connecting(
    api: Api, tmp_path: Path
) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    agent = await enroll(api, owner, tmp_path / "agent")
    org = await org_id(api, owner)
    lookups = 0
    resolve_key = api.cp.alerts.resolve_key

    async def counted(org_id: str, key: str, by: str = "system") -> Any:
        nonlocal lookups
        lookups += 1
        return await resolve_key(org_id, key, by)

    api.cp.alerts.resolve_key = counted  # type: ignore[method-assign]
    beats = 0
    beat = api.cp.presence.beat

    async def counted_beat(*args: Any) -> Any:
        nonlocal beats
        done = await beat(*args)
        beats += 1
        return done

    api.cp.presence.beat = counted_beat  # type: ignore[method-assign]
    # no alert: neither the connect nor the first heartbeat looks one up
    link = await agent.online()
    await link.heartbeat()
    await link.heartbeat()
    for _ in range(500):  # until both were handled
        if beats == 2:
            break
        await asyncio.sleep(0.01)
    assert beats == 2
    assert lookups == 0
    await link.close()

    stream = await api.client.ws_connect(
        "/api/v1/stream", headers={"Authorization": f"Bearer {owner}"}
    )
    await next_event(stream, "hello")
    link = await agent.online()
    await next_event(stream, "vault.status")
    # an offline check that read the old connection raises its alert after the connect
    assert await api.cp.vaults.raise_offline(org, agent.vault_id, "vault-1 disconnected")
    raised = await next_event(stream, "alert.raised")
    await link.heartbeat()
    resolved = await next_event(stream, "alert.resolved")
    assert resolved["data"]["id"] == raised["data"]["id"]
    assert lookups == 1
    await link.close()
    await stream.close()


@pytest.mark.parametrize("mode", ["production"], indirect=True)  # PostgreSQL's setting
async def test_heartbeat_batch_turns_synchronous_commit_off_for_itself_only(
    api: Api, mode: str
) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    a = await _vault(api, owner, "vault-a")
    gen = (await api.cp.presence.connect(a, "0.1.0")).gen
    async with driver(api.cp.engine) as raw:
        cur = await raw.execute(
            _PG_HEARTBEATS.replace("RETURNING", "RETURNING current_setting('synchronous_commit'),"),
            ([a.id], [gen], [api.cp.clock()], ["{}"]),
        )
        assert (await cur.fetchall())[0][0] == "off"  # while the statement runs
        # and not after it: the pooled connection keeps durable commits for everyone else
        cur = await raw.execute("SELECT current_setting('synchronous_commit')")
        assert (await cur.fetchone())[0] == "on"


async def test_a_connect_knows_whether_an_earlier_connection_may_be_open(
    api: Api, mode: str
) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    a = await _vault(api, owner, "vault-a")
    presence = api.cp.presence
    first = await presence.connect(a, "0.1.0")
    second = await presence.connect(a, "0.1.0")  # the first was never closed
    assert await presence.disconnect(a.id, second.gen)
    third = await presence.connect(a, "0.1.0")  # the last one recorded its end
    assert not await presence.disconnect(a.id, second.gen)  # an old one's end changes nothing
    fourth = await presence.connect(a, "0.1.0")
    if mode == "production":
        assert [c.earlier_open for c in (first, second, third, fourth)] == [
            False,
            True,
            False,
            True,
        ]
    else:  # SQLite: one process, nothing to tell other replicas; always said
        assert all(c.earlier_open for c in (first, second, third, fourth))


async def test_takeover_is_announced_only_when_an_earlier_connection_may_be_open(
    api: Api, tmp_path: Path
) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    agent = await enroll(api, owner, tmp_path / "agent")
    bus = api.cp.bus
    routes: list[dict[str, Any]] = []
    route = bus.route

    async def spied(message: dict[str, Any]) -> None:
        routes.append(message)
        await route(message)

    bus.route = spied  # type: ignore[method-assign]
    first = await agent.online()
    second = await agent.online()  # takes over the first, which is still open
    code, _ = await first.closed()
    assert code == uplink.CLOSE_REPLACED
    takeovers = [m["takeover"] for m in routes if "takeover" in m]
    if api.cp.settings.redis_url:
        assert takeovers == [2]  # the first connect had nothing to announce
    else:
        assert takeovers == [1, 2]
    await second.close()
