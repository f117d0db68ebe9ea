"""Rotation in the control plane (docs/rotation.md) over the real gateway: ``rotation`` events
raise/resolve alerts idempotently, the overdue sweep reports offline vaults on schedule from
metadata alone (cheaply, for 100k inventory rows), and bad rotation data is refused (4400)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from common import uplink
from control_plane import schema as t
from control_plane.app import build_app
from control_plane.db import iso
from control_plane.gateway.app import GATEWAY
from control_plane.services.rotation import due_at
from control_plane.settings import ControlPlaneSettings
from control_plane.views.context import CP
from tests.control_plane.conftest import Api, Clock
from tests.control_plane.mock_agent import Enrolled, enroll, event
from tests.control_plane.test_gateway_uplink import inv
from tests.control_plane.test_stream import next_event

HOUR = 3600
POLICY = {
    "name": "hourly",
    "selector": {"name_glob": "db/*"},
    "interval_seconds": 2 * HOUR,
    "notice_seconds": 600,
    "rotator": {"type": "random", "settings": {"length": 32}},
}


def rot(
    secret_id: str,
    outcome: str,
    reason: str | None = None,
    *,
    policy_id: str = "pol_x",
    version: int = 2,
    rotated_at: str | None = "2026-03-01T10:00:00Z",
    next_due_at: str | None = "2126-03-01T10:00:00Z",
    **extra: Any,
) -> dict[str, Any]:
    """A ``rotation`` event's data."""
    return {
        "secret_id": secret_id,
        "policy_id": policy_id,
        "outcome": outcome,
        "reason": reason,
        "version": version,
        "rotated_at": rotated_at,
        "next_due_at": next_due_at,
        **extra,
    }


async def _setup(api: Api, tmp_path: Path) -> tuple[str, Enrolled]:
    owner = await api.org("Acme", "owner@acme.test")
    return owner, await enroll(api, owner, tmp_path / "agent")


async def _alerts(api: Api, owner: str, state: str = "open", kind: str = "") -> list[Any]:
    _, page = await api.call("GET", f"/alerts?state={state}", owner)
    return [a for a in page["items"] if a["kind"].startswith(kind or "rotation_")]


async def _item(api: Api, owner: str, vault_id: str, secret_id: str) -> dict[str, Any]:
    _, page = await api.call("GET", f"/vaults/{vault_id}/inventory", owner)
    return next(i for i in page["items"] if i["secret_id"] == secret_id)


async def test_failed_raises_one_alert_even_when_redelivered(api: Api, tmp_path: Path) -> None:
    owner, agent = await _setup(api, tmp_path)
    stream = await api.client.ws_connect(
        "/api/v1/stream", headers={"Authorization": f"Bearer {owner}"}
    )
    await next_event(stream, "hello")
    link = await agent.online()
    await link.events("outbox", [event(1, "inventory", inv("sec_a"))])
    # shaped like the agent's: its own ISO times (offset, microseconds), the retry time as due
    data = rot(
        "sec_a",
        "failed",
        "authentication_failed",
        rotated_at="2126-03-01T09:00:00.250000+00:00",
        next_due_at="2126-03-01T10:00:00.123456+00:00",
    )
    failed = [event(2, "rotation", data)]
    assert (await link.events("outbox", failed))["upto"] == 2
    raised = await next_event(stream, "alert.raised")
    assert (await link.events("outbox", failed))["upto"] == 2  # the ack was lost: redelivered
    again = [event(3, "rotation", {**data, "reason": "verification_failed"})]
    assert (await link.events("outbox", again))["upto"] == 3  # a newer failure: still one alert
    alerts = await _alerts(api, owner)
    assert len(alerts) == 1 and alerts[0] == raised["data"]
    alert = alerts[0]
    assert alert["kind"] == "rotation_failed" and alert["severity"] == "warning"
    assert alert["key"] == f"rotation_failed:{agent.vault_id}:sec_a"
    assert alert["vault_id"] == agent.vault_id
    assert alert["message"] == (
        f"rotation of secret sec_a in vault {agent.vault_id} (policy pol_x) failed: "
        "authentication_failed"
    )
    item = await _item(api, owner, agent.vault_id, "sec_a")
    assert item["policy_id"] == "pol_x"
    assert item["rotation"] == {
        "state": "failed",
        "last_rotated_at": None,  # a failure leaves the current value (and its time) alone
        "next_due_at": "2126-03-01T10:00:00.123456Z",
    }
    metrics = api.cp.metrics.alerts_raised
    assert metrics == 1
    await link.close()
    await stream.close()


async def test_ok_resolves_failed_and_overdue(api: Api, tmp_path: Path) -> None:
    owner, agent = await _setup(api, tmp_path)
    _, policy = await api.call("POST", "/policies", owner, json=POLICY)
    link = await agent.online()
    long_ago = "2026-01-01T00:00:00Z"
    item = inv("sec_a", policy_id=policy["id"], created_at=long_ago)
    await link.events("outbox", [event(1, "inventory", item)])
    assert await api.cp.rotations.sweep_overdue() == 1
    failed = rot("sec_a", "failed", "database_unreachable", policy_id=policy["id"])
    await link.events("outbox", [event(2, "rotation", failed)])
    kinds = sorted(a["kind"] for a in await _alerts(api, owner))
    assert kinds == ["rotation_failed", "rotation_overdue"]
    now = iso(api.cp.now())
    ok = rot("sec_a", "ok", policy_id=policy["id"], version=3, rotated_at=now, next_due_at=None)
    assert (await link.events("outbox", [event(3, "rotation", ok)]))["upto"] == 3
    assert await _alerts(api, owner) == []
    resolved = await _alerts(api, owner, "resolved")
    assert sorted(a["kind"] for a in resolved) == ["rotation_failed", "rotation_overdue"]
    assert {a["resolved_by"] for a in resolved} == {"system"}
    item_now = await _item(api, owner, agent.vault_id, "sec_a")
    assert item_now["rotation"] == {"state": "ok", "last_rotated_at": now, "next_due_at": None}
    # due again only at the last rotation + interval (+ notice)
    assert await api.cp.rotations.sweep_overdue() == 0
    # a redelivered ok changes nothing; a new failure raises again
    await link.events("outbox", [event(3, "rotation", ok)])
    assert await _alerts(api, owner) == []
    await link.events("outbox", [event(4, "rotation", failed)])
    assert [a["kind"] for a in await _alerts(api, owner)] == ["rotation_failed"]
    await link.close()


async def test_stale_ok_after_newer_failure_is_ignored(api: Api, tmp_path: Path) -> None:
    """Event order is the outbox seq (monotonic per vault): an ok with a lower seq than the
    failure already applied (e.g. from a replaced connection) neither resolves nor overwrites."""
    owner, agent = await _setup(api, tmp_path)
    link = await agent.online()
    await link.events("outbox", [event(7, "rotation", rot("sec_a", "failed", "command_timeout"))])
    stale = rot("sec_a", "ok", rotated_at="2026-03-01T09:00:00Z")
    assert (await link.events("outbox", [event(5, "rotation", stale)]))["upto"] == 5
    assert [a["kind"] for a in await _alerts(api, owner)] == ["rotation_failed"]
    item = await _item(api, owner, agent.vault_id, "sec_a")
    assert item["rotation"]["state"] == "failed"
    # within one batch only a secret's last event counts
    batch = [
        event(8, "rotation", rot("sec_b", "failed", "interrupted")),
        event(9, "rotation", rot("sec_b", "ok")),
        event(10, "rotation", rot("sec_c", "ok")),
        event(11, "rotation", rot("sec_c", "failed", "invalid_settings")),
    ]
    await link.events("outbox", batch)
    keys = sorted(a["key"] for a in await _alerts(api, owner))
    assert keys == [f"rotation_failed:{agent.vault_id}:{s}" for s in ("sec_a", "sec_c")]
    # a destroyed secret's rotation alerts are resolved, and a later inventory event wins
    batch = [
        event(12, "rotation", rot("sec_d", "failed", "internal_error")),
        event(13, "inventory", inv("sec_d", destroyed=True)),
        event(14, "inventory", inv("sec_c", destroyed=True)),
    ]
    await link.events("outbox", batch)
    assert [a["key"] for a in await _alerts(api, owner)] == [
        f"rotation_failed:{agent.vault_id}:sec_a"
    ]
    _, page = await api.call("GET", f"/vaults/{agent.vault_id}/inventory", owner)
    assert sorted(i["secret_id"] for i in page["items"]) == ["sec_a", "sec_b"]
    await link.close()


async def test_overdue_for_an_offline_vault_on_schedule(api: Api, tmp_path: Path) -> None:
    owner, agent = await _setup(api, tmp_path)
    stream = await api.client.ws_connect(
        "/api/v1/stream", headers={"Authorization": f"Bearer {owner}"}
    )
    await next_event(stream, "hello")
    _, policy = await api.call("POST", "/policies", owner, json=POLICY)
    _, gone = await api.call("POST", "/policies", owner, json={**POLICY, "name": "gone"})
    start = api.cp.now()
    created = iso(start)
    reported = iso(start + timedelta(hours=1))
    later = start + timedelta(days=7)
    pid = policy["id"]
    items = [
        inv("sec_created", policy_id=pid, created_at=created),  # due at created + 2 h
        inv(
            "sec_reported",  # the agent said when: due at start + 1 h
            policy_id=pid,
            created_at=created,
            rotation={"state": "ok", "last_rotated_at": created, "next_due_at": reported},
        ),
        inv(
            "sec_rotated",  # rotated 30 min after creation: due at start + 2.5 h
            policy_id=pid,
            created_at=created,
            rotation={
                "state": "ok",
                "last_rotated_at": iso(start + timedelta(minutes=30)),
                "next_due_at": None,
            },
        ),
        inv(
            "sec_failing",  # failing, retried far ahead: still due at created + 2 h
            policy_id=pid,
            created_at=created,
            rotation={"state": "failed", "last_rotated_at": None, "next_due_at": iso(later)},
        ),
        inv("sec_nopolicy", created_at=created),
        inv("sec_deleted", policy_id=pid, created_at=created, deleted_at=created),
        inv("sec_gone", policy_id=gone["id"], created_at=created),
        inv("sec_foreign", policy_id="pol_of_another_org", created_at=created),
    ]
    link = await agent.online()
    await link.events("outbox", [event(n, "inventory", d) for n, d in enumerate(items, 1)])
    await link.close()  # offline from here on: metadata alone drives the alerts
    assert (await api.call("DELETE", f"/policies/{gone['id']}", owner))[0] == 204
    sweep = api.cp.rotations.sweep_overdue
    assert await sweep() == 0
    notice = POLICY["notice_seconds"]
    api.clock.advance(HOUR + notice - 30)  # due + notice not yet passed
    assert await sweep() == 0
    api.clock.advance(60)
    assert await sweep() == 1
    raised = await next_event(stream, "alert.raised")
    assert raised["data"]["key"] == f"rotation_overdue:{agent.vault_id}:sec_reported"
    assert raised["data"]["message"] == (
        f"secret sec_reported in vault {agent.vault_id} is overdue for rotation under policy "
        f"{pid} (due {reported})"
    )
    assert await sweep() == 0  # deduplicated
    api.clock.advance(HOUR - 60)  # created + 2 h + notice - 30 s
    assert await sweep() == 0
    api.clock.advance(60)
    assert await sweep() == 2
    api.clock.advance(HOUR / 2)
    assert await sweep() == 1
    owner = await api.login("owner@acme.test")
    alerts = await _alerts(api, owner, kind="rotation_overdue")
    assert sorted(a["key"].rsplit(":", 1)[1] for a in alerts) == [
        "sec_created",
        "sec_failing",
        "sec_reported",
        "sec_rotated",
    ]
    assert {a["severity"] for a in alerts} == {"warning"}
    # the policy is deleted: its overdue alerts are resolved by the next sweep
    assert (await api.call("DELETE", f"/policies/{pid}", owner))[0] == 204
    assert await sweep() == 0
    assert await _alerts(api, owner) == []
    await stream.close()


async def test_periodic_sweeper_raises_overdue(
    aiohttp_client: Any, settings_factory: Callable[..., ControlPlaneSettings], tmp_path: Path
) -> None:
    """The background sweeper (not only a direct call) raises ``rotation_overdue``."""
    settings = settings_factory(background_tasks=True, sweep_interval_seconds=0.2)
    app = build_app(settings, clock=Clock())
    api = Api(await aiohttp_client(app), app[CP], Clock(), gateway=app[GATEWAY])
    owner, agent = await _setup(api, tmp_path)
    _, policy = await api.call("POST", "/policies", owner, json=POLICY)
    link = await agent.online()
    item = inv("sec_a", policy_id=policy["id"], created_at="2026-01-01T00:00:00Z")
    await link.events("outbox", [event(1, "inventory", item)])
    await link.close()
    for _ in range(100):
        alerts = await _alerts(api, owner, kind="rotation_overdue")
        if alerts:
            break
        await asyncio.sleep(0.05)
    assert [a["key"] for a in alerts] == [f"rotation_overdue:{agent.vault_id}:sec_a"]


def test_due_date_rules() -> None:
    created = datetime.fromisoformat("2026-03-01T00:00:00+00:00")
    assert due_at(None, created, 60) == created + timedelta(seconds=60)
    assert due_at(None, None, 60) is None
    rotation = {"state": "ok", "last_rotated_at": "2026-03-02T00:00:00Z", "next_due_at": None}
    assert due_at(rotation, created, 60) == created + timedelta(days=1, seconds=60)
    rotation["next_due_at"] = "2026-03-05T00:00:00Z"
    assert due_at(rotation, created, 60) == created + timedelta(days=4)
    # a failed rotation's next_due_at is the agent's retry time: the schedule still counts
    failed = {**rotation, "state": "failed"}
    assert due_at(failed, created, 60) == created + timedelta(days=1, seconds=60)
    assert due_at({**failed, "last_rotated_at": None}, None, 60) == created + timedelta(days=4)


def _batch(kind: str, data: Any, stream: str = "outbox") -> dict[str, Any]:
    return {"type": "events", "stream": stream, "batch": [event(1, kind, data)]}


BAD_ROTATION: list[tuple[str, dict[str, Any]]] = [
    ("free-text reason", _batch("rotation", rot("a", "failed", "password 'hunter2' rejected"))),
    ("unknown reason", _batch("rotation", rot("a", "failed", "timeout"))),
    ("failed without reason", _batch("rotation", rot("a", "failed"))),
    ("ok with reason", _batch("rotation", rot("a", "ok", "interrupted"))),
    ("reason not text", _batch("rotation", rot("a", "failed", ["internal_error"]))),  # type: ignore[arg-type]
    ("bad outcome", _batch("rotation", rot("a", "skipped"))),
    ("negative version", _batch("rotation", rot("a", "ok", version=-1))),
    ("bool version", _batch("rotation", rot("a", "ok", version=True))),
    ("bad rotated_at", _batch("rotation", rot("a", "ok", rotated_at="yesterday"))),
    ("bad next_due_at", _batch("rotation", rot("a", "ok", next_due_at=12))),  # type: ignore[arg-type]
    ("bad secret id", _batch("rotation", rot("db/password", "ok"))),
    ("bad policy id", _batch("rotation", rot("a", "ok", policy_id="pol x"))),
    ("extra field", _batch("rotation", rot("a", "ok", message="boom"))),
    ("missing outcome", _batch("rotation", {"secret_id": "a", "policy_id": "p", "version": 1})),
    ("on the audit stream", _batch("rotation", rot("a", "ok"), stream="audit")),
    ("inventory bad state", _batch("inventory", inv("a", rotation={"state": "scheduled"}))),
    ("inventory state free text", _batch("inventory", inv("a", rotation={"state": "failed: db down"}))),
    ("inventory rotation extra", _batch("inventory", inv("a", rotation={"state": "ok", "reason": "x"}))),
    ("inventory bad due", _batch("inventory", inv("a", rotation={"state": "due", "next_due_at": "soon"}))),
    ("inventory rotation not object", _batch("inventory", inv("a", rotation="ok"))),
    ("inventory bad policy id", _batch("inventory", inv("a", policy_id="pol/x"))),
]  # fmt: skip


async def test_bad_rotation_data_refused_4400(api: Api, tmp_path: Path) -> None:
    owner, agent = await _setup(api, tmp_path)
    for name, frame in BAD_ROTATION:
        link = await agent.online()
        await link.send(frame)
        code, frames = await link.closed()
        assert code == uplink.CLOSE_PROTOCOL, (name, code, frames)
        assert frames[-1]["type"] == "error" and frames[-1]["code"] == uplink.ERR_PROTOCOL, name
        await link.close()
    async with api.cp.engine.connect() as conn:
        count = sa.select(sa.func.count()).select_from(t.inventory)
        assert (await conn.execute(count)).scalar() == 0
    assert await _alerts(api, owner) == []
    # every fixed reason code is accepted, and the real inventory shapes too
    link = await agent.online()
    batch = [
        event(n, "rotation", rot(f"sec_{n}", "failed", reason))
        for n, reason in enumerate(sorted(uplink.ROTATION_REASONS), 1)
    ]
    assert (await link.events("outbox", batch))["upto"] == len(batch)
    states = [
        event(100 + n, "inventory", inv(f"inv_{state}", policy_id="pol_x", rotation=r))
        for n, state in enumerate(sorted(uplink.ROTATION_STATES))
        for r in [{"state": state, "last_rotated_at": None, "next_due_at": "2026-04-01T00:00:00Z"}]
    ]
    assert (await link.events("outbox", states))["upto"] == 100 + len(states) - 1
    await link.close()
    alerts = await _alerts(api, owner)
    assert sorted(a["message"].rsplit(": ", 1)[1] for a in alerts) == sorted(
        uplink.ROTATION_REASONS
    )


@pytest.mark.parametrize("mode", ["production"], indirect=True)
async def test_overdue_sweep_is_cheap_for_100k_rows(api: Api, tmp_path: Path) -> None:
    """One join over the inventory whatever its size: the statement count does not grow with
    the rows, only with the alerts raised."""
    owner, agent = await _setup(api, tmp_path)
    _, policy = await api.call("POST", "/policies", owner, json=POLICY)
    now = api.cp.now()
    later = iso(now + timedelta(days=30))
    rows = [
        {
            "vault_id": agent.vault_id,
            "secret_id": f"sec_{i:06d}",
            "version": 1,
            "created_at": now - timedelta(days=1),
            "policy_id": policy["id"] if i % 10 else None,
            "rotation": (
                '{"state": "ok", "last_rotated_at": null, "next_due_at": "' + str(later) + '"}'
            )
            if i >= 3
            else None,  # three have no due date: created a day ago + 2 h → overdue
            "reported_at": now,
        }
        for i in range(100_000)
    ]
    rows[0]["policy_id"] = rows[1]["policy_id"] = rows[2]["policy_id"] = policy["id"]
    async with api.cp.engine.begin() as conn:
        for start in range(0, len(rows), 10_000):
            await conn.execute(t.inventory.insert(), rows[start : start + 10_000])
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    sa.event.listen(api.cp.engine.sync_engine, "before_cursor_execute", count)
    started = time.perf_counter()
    try:
        assert await api.cp.rotations.sweep_overdue() == 3
        first = len(statements)
        assert await api.cp.rotations.sweep_overdue() == 0
    finally:
        sa.event.remove(api.cp.engine.sync_engine, "before_cursor_execute", count)
    took = time.perf_counter() - started
    print(f"overdue sweep over 100k inventory rows: two sweeps {took:.2f} s, {first} statements")
    # lock, policies, inventory join, open alerts, unlock; 3 alerts at a few statements each
    assert first <= 5 + 3 * 4, statements
    assert len(statements) - first <= 5, statements[first:]
    assert took < 30
