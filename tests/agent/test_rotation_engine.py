"""The rotation engine and scheduler in-process: two phases, failures, recovery, due dates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.assembly import Agent
from agent.rotation.engine import RotationEngine, RotationFailedError
from agent.rotation.policy import Policy
from agent.rotation.rotators import RotationError
from agent.rotation.scheduler import Scheduler
from agent.settings import load_agent_settings
from agent.uplink import meta as uplink_meta
from agent.uplink import outbox
from agent.uplink.inventory import events
from common.errors import NotFoundError
from tests.conftest import init_agent_dir

RANDOM = {"type": "random", "settings": {"length": 24}}


def policy_doc(pid: str = "pol_a", rotator: dict[str, Any] | None = None,
               glob: str = "**", interval: int = 3600) -> dict[str, Any]:  # fmt: skip
    return {"id": pid, "name": pid, "version": 1,
            "body": {"selector": {"name_glob": glob}, "interval_seconds": interval,
                     "notice_seconds": 60, "rotator": rotator or RANDOM,
                     "scope": {"all": True}}}  # fmt: skip


async def set_policies(agent: Agent, *docs: dict[str, Any]) -> None:
    value = {"version": "v" + str(len(docs)), "policies": list(docs)}
    await agent.store.write(lambda c: uplink_meta.put(c, uplink_meta.POLICIES, value))


def opened(folder: Path, **rotation: Any) -> Agent:
    settings = load_agent_settings(
        None, folder, rotation={"jitter_fraction": 0, "retry_base_seconds": 10, **rotation}
    )
    return Agent.open(settings)


@pytest.fixture
async def agent(tmp_path: Path, storage_url: str | None) -> AsyncIterator[Agent]:
    folder = init_agent_dir(tmp_path / "agent", storage_url=storage_url)
    a = await asyncio.to_thread(opened, folder.path)
    a.secrets.feed.track()
    try:
        yield a
    finally:
        await asyncio.to_thread(a.close)


def engine_of(agent: Agent) -> RotationEngine:
    assert agent.rotation is not None
    return agent.rotation


async def rotation_events(agent: Agent) -> list[dict[str, Any]]:
    rows = await agent.store.read(lambda c: outbox.oldest(c, 100000))
    return [r.body for r in rows if r.kind == "rotation"]


async def schedule(agent: Agent, sid: str) -> Any:
    return await agent.store.read(
        lambda c: c.execute("SELECT * FROM kv_rotation WHERE secret_id = ?", (sid,)).first()
    )


class Fake:
    """A rotator that fails where told and checks that the pending value is invisible."""

    def __init__(self, agent: Agent, loop: asyncio.AbstractEventLoop, fail_at: str | None) -> None:
        self.agent, self.loop, self.fail_at = agent, loop, fail_at
        self.calls: list[str] = []
        self.seen_during_apply: tuple[str, bool] | None = None

    def _maybe_fail(self, step: str) -> None:
        self.calls.append(step)
        if self.fail_at == step:
            raise RotationError("verification_failed" if step == "verify" else "command_failed")
        if self.fail_at == step + "-crash":
            raise RuntimeError("boom with no value in it")

    def generate(self, current: str | None) -> str:
        self._maybe_fail("generate")
        return "new-" + (current or "")

    def apply(self, new: str, current: str | None) -> None:
        self._maybe_fail("apply")
        sid = self.sid
        _, ver, value = asyncio.run_coroutine_threadsafe(
            self.agent.secrets.reveal(sid), self.loop
        ).result()
        try:
            asyncio.run_coroutine_threadsafe(
                self.agent.secrets.reveal(sid, ver + 1), self.loop
            ).result()
            hidden = False
        except NotFoundError:
            hidden = True
        self.seen_during_apply = (value, hidden)

    def verify(self, new: str) -> None:
        self._maybe_fail("verify")

    def revert(self, current: str | None, new: str) -> None:
        self.calls.append("revert")

    sid = ""


async def test_random_rotation_two_phases(agent: Agent) -> None:
    await set_policies(agent, policy_doc())
    meta = await agent.secrets.create("db/pass", "old-value")
    engine = engine_of(agent)
    policy = await engine.governing(meta)
    assert policy is not None and policy.id == "pol_a"
    new = await engine.rotate(meta.id, policy)
    assert new.version == 2
    _, ver, value = await agent.secrets.reveal(meta.id)
    assert ver == 2 and len(value) == 24 and value != "old-value"
    assert (await agent.secrets.reveal(meta.id, 1))[2] == "old-value"  # previous stays readable
    [event] = await rotation_events(agent)
    assert event["outcome"] == "ok" and event["version"] == 2 and event["reason"] is None
    assert event["policy_id"] == "pol_a" and event["secret_id"] == meta.id
    row = await schedule(agent, meta.id)
    assert row.state == "ok" and row.lease_owner is None and row.attempts == 0
    assert row.next_due_at == event["next_due_at"] and row.last_rotated_at == event["rotated_at"]
    versions = await agent.secrets.versions(meta.id)
    assert [v["version"] for v in versions] == [2, 1]


@pytest.mark.parametrize("fail_at", ["generate", "apply", "verify", "verify-crash"])
async def test_failure_keeps_old_value(agent: Agent, fail_at: str) -> None:
    await set_policies(agent, policy_doc())
    meta = await agent.secrets.create("db/pass", "old-value")
    engine = engine_of(agent)
    fake = Fake(agent, asyncio.get_running_loop(), fail_at)
    fake.sid = meta.id
    engine.builder = lambda *_: fake
    policy = await engine.governing(meta)
    assert policy is not None
    with pytest.raises(RotationFailedError) as err:
        await engine.rotate(meta.id, policy)
    reason = {"generate": "command_failed", "apply": "command_failed",
              "verify": "verification_failed", "verify-crash": "internal_error"}[fail_at]  # fmt: skip
    assert err.value.reason == reason
    if fail_at != "generate":
        assert "revert" in fake.calls
        assert fake.calls[-1] == "revert"
    if fail_at.startswith("verify"):
        assert fake.seen_during_apply == ("old-value", True)  # readers never saw the pending one
    _, ver, value = await agent.secrets.reveal(meta.id)
    assert (ver, value) == (1, "old-value")
    pending = await agent.store.read(
        lambda c: (
            c.execute("SELECT version FROM kv_versions WHERE state IS NOT NULL").scalars().all()
        )
    )
    assert pending == []
    [event] = await rotation_events(agent)
    assert event["outcome"] == "failed" and event["reason"] == reason and event["version"] == 1
    row = await schedule(agent, meta.id)
    assert row.state == "failed" and row.attempts == 1 and row.last_reason == reason
    assert row.lease_owner is None
    # retried with backoff: the second failure waits twice as long
    first = datetime.fromisoformat(row.next_due_at)
    with pytest.raises(RotationFailedError):
        await engine.rotate(meta.id, policy)
    row2 = await schedule(agent, meta.id)
    assert row2.attempts == 2
    wait = datetime.fromisoformat(row2.next_due_at) - datetime.now(first.tzinfo)
    assert timedelta(seconds=19) <= wait <= timedelta(seconds=21)
    # and a later success works and resets the attempts
    ok = Fake(agent, asyncio.get_running_loop(), None)
    ok.sid = meta.id
    engine.builder = lambda *_: ok
    new = await engine.rotate(meta.id, policy)
    assert new.version == 2 and (await agent.secrets.reveal(meta.id))[2] == "new-old-value"
    assert (await schedule(agent, meta.id)).attempts == 0


async def test_recovery_discards_pending_and_reports_interrupted(agent: Agent) -> None:
    await set_policies(agent, policy_doc())
    meta = await agent.secrets.create("db/pass", "old-value")
    engine = engine_of(agent)
    policy = await engine.governing(meta)
    assert policy is not None
    sealed = agent.keys.seal(meta.id, 2, b"half-done")
    await agent.store.write(engine._stage(meta, policy, 2, sealed, False))  # then "crash"
    assert (await agent.secrets.reveal(meta.id))[2] == "old-value"
    with pytest.raises(NotFoundError):
        await agent.secrets.reveal(meta.id, 2)
    assert await engine.recover() == 1
    assert await engine.recover() == 0
    [event] = await rotation_events(agent)
    assert event["outcome"] == "failed" and event["reason"] == "interrupted"
    assert (await schedule(agent, meta.id)).state == "failed"
    new = await engine.rotate(meta.id, policy)  # the version number is free again
    assert new.version == 2


async def test_update_during_rotation_is_a_conflict(agent: Agent) -> None:
    await set_policies(agent, policy_doc())
    meta = await agent.secrets.create("db/pass", "old-value")
    engine = engine_of(agent)
    policy = await engine.governing(meta)
    assert policy is not None
    await agent.store.write(
        engine._stage(meta, policy, 2, agent.keys.seal(meta.id, 2, b"x"), False)
    )
    from common.errors import ConflictError

    with pytest.raises(ConflictError):
        await agent.secrets.update(meta.id, value="manual")


async def test_scheduler_pass_due_dates_and_inventory(agent: Agent, tmp_path: Path) -> None:
    await set_policies(
        agent, policy_doc(glob="due/*", interval=3600), policy_doc("pol_b", glob="x")
    )
    old = await agent.secrets.create("due/old", "v")
    fresh = await agent.secrets.create("due/fresh", "v")
    other = await agent.secrets.create("ungoverned", "v")
    # make "old" two hours old: due now
    past = (datetime.fromisoformat(old.created_at) - timedelta(hours=2)).isoformat()
    await agent.store.write(
        lambda c: c.execute("UPDATE kv_secrets SET created_at = ? WHERE id = ?", (past, old.id))
    )
    scheduler = Scheduler(engine_of(agent))
    plan = await scheduler.run_pass()
    assert plan.added == 2 and plan.due == [old.id]
    assert scheduler.rotated == 1
    assert (await agent.secrets.reveal(old.id))[1] == 2
    assert (await agent.secrets.reveal(fresh.id))[1] == 1
    assert await schedule(agent, other.id) is None
    fresh_due = (await schedule(agent, fresh.id)).next_due_at
    assert fresh_due == (datetime.fromisoformat(fresh.created_at) + timedelta(hours=1)).isoformat()
    again = await scheduler.run_pass()
    assert again.added == again.changed == again.dropped == 0 and again.due == []
    # inventory records carry the policy and the schedule
    rows = await agent.store.read(lambda c: outbox.oldest(c, 100000))
    evs = await agent.store.read(lambda c: events(c, rows, "vlt_x", None))
    records = {e["data"]["secret_id"]: e["data"] for e in evs if e["kind"] == "inventory"}
    assert records[old.id]["policy_id"] == "pol_a"
    assert records[old.id]["rotation"]["state"] == "ok"
    assert records[fresh.id]["rotation"] == {"state": "ok", "last_rotated_at": None,
                                             "next_due_at": fresh_due}  # fmt: skip
    assert records[other.id]["policy_id"] is None and records[other.id]["rotation"] is None
    # policy removed: the schedule goes
    await set_policies(agent, policy_doc("pol_b", glob="x"))
    assert (await scheduler.run_pass()).dropped == 2


async def test_restart_keeps_due_dates(tmp_path: Path) -> None:
    folder = init_agent_dir(tmp_path / "agent")
    first = await asyncio.to_thread(opened, folder.path, jitter_fraction=0.3)
    try:
        await set_policies(first, policy_doc())
        metas = [await first.secrets.create(f"s{i}", "v") for i in range(5)]
        await Scheduler(engine_of(first)).run_pass()
        before = {m.id: (await schedule(first, m.id)).next_due_at for m in metas}
    finally:
        await asyncio.to_thread(first.close)
    second = await asyncio.to_thread(opened, folder.path, jitter_fraction=0.3)
    try:
        plan = await Scheduler(engine_of(second)).run_pass()
        assert plan.added == plan.changed == 0
        after = {m.id: (await schedule(second, m.id)).next_due_at for m in metas}
        assert after == before
        assert len(set(before.values())) > 1  # jittered
    finally:
        await asyncio.to_thread(second.close)


async def test_api_and_command_rotate_use_the_policy(agent: Agent, aiohttp_client: Any) -> None:
    from agent.api.app import build_app
    from agent.uplink.commands import CommandRunner

    await set_policies(agent, policy_doc(rotator={"type": "random",
                                                  "settings": {"encoding": "hex", "bytes": 16}}))  # fmt: skip
    meta = await agent.secrets.create("db/pass", "old-value")
    plain = await agent.secrets.create("plain", "old-value")
    await set_policies(agent, policy_doc(glob="db/*", rotator={"type": "random",
                       "settings": {"encoding": "hex", "bytes": 16}}))  # fmt: skip
    client = await aiohttp_client(build_app(agent))
    token = await _admin_token(agent)
    resp = await client.post(f"/api/v1/secrets/{meta.id}/rotate",
                             headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert resp.status == 200, await resp.text()
    value = (await agent.secrets.reveal(meta.id))[2]
    assert len(value) == 32 and all(c in "0123456789abcdef" for c in value)  # the policy's rotator
    resp = await client.post(f"/api/v1/secrets/{plain.id}/rotate",
                             headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert resp.status == 200
    assert len(await rotation_events(agent)) == 1  # the unpoliced one is a plain rotate
    runner = CommandRunner(agent)
    await runner.handle({"id": "cmd_aaaaaaaaaaaaaaaaaaaaaaaaaa", "command": "rotate",
                         "args": {"secret_id": meta.id}})  # fmt: skip
    rows = await agent.store.read(lambda c: outbox.oldest(c, 100000))
    results = [r.body for r in rows if r.kind == "command_result"]
    assert results[-1]["outcome"] == "ok" and results[-1]["version"] == 3
    assert len(await rotation_events(agent)) == 2
    await client.close()


async def _admin_token(agent: Agent) -> str:
    from agent.auth import Policy as TokenPolicy

    token, _ = await agent.tokens.create("t", TokenPolicy.root())
    return token


def test_policy_rotator_settings_round_trip() -> None:
    p = Policy.parse(policy_doc())
    assert p is not None and p.rotator == RANDOM and json.dumps(p.rotator)
