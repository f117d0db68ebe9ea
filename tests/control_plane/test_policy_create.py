"""Creating a policy: one INSERT carries the room check, and exactly one event goes out."""

from __future__ import annotations

import json

import pytest

from control_plane.services import policies as policies_module
from tests.control_plane.conftest import Api
from tests.control_plane.test_policies_alerts import POLICY, new_vault


async def _org(api: Api) -> tuple[str, str]:
    owner = await api.org("Acme", "owner@acme.test")
    return owner, (await api.cp.accounts.session(owner)).org_id


async def test_created_policy_is_the_stored_row_and_one_event(api: Api) -> None:
    owner, org_id = await _org(api)
    with api.cp.bus.subscribe(org_id) as sub:
        status, pol = await api.call("POST", "/policies", owner, json=POLICY)
        assert status == 201, pol
        event = json.loads(sub.queue.get_nowait())
        assert event["type"] == "policy.created" and event["data"] == pol
        assert (await api.call("POST", "/policies", owner, json=POLICY))[0] == 409
        assert sub.queue.empty()  # a refused create announces nothing
    status, got = await api.call("GET", f"/policies/{pol['id']}", owner)
    assert status == 200 and got == pol


async def test_room_is_checked_in_the_insert(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policies_module, "MAX_POLICIES", 2)
    owner, org_id = await _org(api)
    vault_id = await new_vault(api, owner)
    scoped = {**POLICY, "name": "scoped", "scope": {"vault_ids": [vault_id]}}
    assert (await api.call("POST", "/policies", owner, json=scoped))[0] == 201
    assert (await api.call("POST", "/policies", owner, json={**POLICY, "name": "b"}))[0] == 201
    with api.cp.bus.subscribe(org_id) as sub:
        for doc in ({**POLICY, "name": "c"}, {**scoped, "name": "scoped-2"}):
            status, body = await api.call("POST", "/policies", owner, json=doc)
            assert status == 409 and "at most 2 policies" in json.dumps(body), body
        assert sub.queue.empty()
    _, listing = await api.call("GET", "/policies", owner)
    assert sorted(p["name"] for p in listing["items"]) == ["b", "scoped"]
    other = await api.org("Other", "owner@other.test")  # the count is per organisation
    assert (await api.call("POST", "/policies", other, json=POLICY))[0] == 201


async def test_unknown_vault_stores_nothing(api: Api) -> None:
    owner, _ = await _org(api)
    doc = {**POLICY, "scope": {"vault_ids": ["vlt_missing"]}}
    status, body = await api.call("POST", "/policies", owner, json=doc)
    assert status == 400 and "no vault vlt_missing" in json.dumps(body), body
    _, listing = await api.call("GET", "/policies", owner)
    assert listing["items"] == []


async def test_sealed_policy_create_is_stored_announced_and_unique(api: Api) -> None:
    from common import intents
    from common.metadata_key import MetadataKey

    owner, org_id = await _org(api)
    vault_id = await new_vault(api, owner)
    header = intents.policy_header(
        intents.new_id("pol"), 1, interval_seconds=3600, notice_seconds=0, vault_ids=[vault_id]
    )
    key = MetadataKey(bytes(range(32)))  # the app's; the control plane cannot open the intent
    sealed = intents.IntentKeys(key).seal(header, {"name": "n", "rotator": {}})
    with api.cp.bus.subscribe(org_id) as sub:
        status, pol = await api.call("POST", "/policies", owner, json={"intent": sealed})
        assert status == 201, pol
        assert pol["sealed"] and pol["intent"] == sealed and pol["id"] == header.id
        assert pol["scope"] == {"vault_ids": [vault_id]}
        assert json.loads(sub.queue.get_nowait())["data"] == pol
        assert (await api.call("POST", "/policies", owner, json={"intent": sealed}))[0] == 409
        assert sub.queue.empty()
    assert (await api.call("GET", f"/policies/{pol['id']}", owner))[1] == pol


@pytest.mark.parametrize("mode", ["production"], indirect=True)  # PostgreSQL's setting
async def test_the_policy_insert_commits_durably(api: Api, mode: str) -> None:
    """The statement behind every policy.created event runs on the driver's connection with
    synchronous_commit on: the event is announced only after a durable commit."""
    from datetime import UTC, datetime

    from control_plane.db import driver

    _owner, org_id = await _org(api)
    now = datetime.now(UTC)
    params = {"org_id": org_id, "id": "pol_durable", "name": "durable", "body": "{}"}
    params |= {"version": 1, "intent": None, "created_at": now, "updated_at": now, "most": 200}
    query = policies_module._PG_INSERT.replace("RETURNING", "RETURNING current_setting("
                                               "'synchronous_commit') AS sync,")  # fmt: skip
    async with driver(api.cp.engine) as raw:
        assert raw.autocommit  # the INSERT is its own transaction, committed when it returns
        cur = await raw.execute(query, params)
        assert (await cur.fetchone())[0] == "on"


@pytest.mark.parametrize("mode", ["production"], indirect=True)  # the PostgreSQL pool
async def test_the_pool_hands_out_the_connection_returned_last(api: Api, mode: str) -> None:
    """After a burst opened several connections, one statement after another uses the same
    (warm) PostgreSQL backend instead of rotating through every pooled connection."""
    import sqlalchemy as sa

    engine = api.cp.engine
    burst = [await engine.connect() for _ in range(5)]
    for conn in burst:
        await conn.execute(sa.text("SELECT 1"))
    for conn in burst:
        await conn.close()
    pids = set()
    for _ in range(10):
        async with engine.connect() as conn:
            pids.add((await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar())
    assert len(pids) == 1


async def test_the_audit_entry_is_one_statement_committed_at_once(api: Api, mode: str) -> None:
    """The write's audit entry (after its event) is one INSERT in autocommit on PostgreSQL, not
    BEGIN + INSERT + COMMIT: committed when it returns, seen at once by any other connection."""
    import sqlalchemy as sa

    from control_plane import schema as t

    owner, org_id = await _org(api)
    status, pol = await api.call("POST", "/policies", owner, json=POLICY)
    assert status == 201
    async with api.cp.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(t.audit.c.action, t.audit.c.target).where(t.audit.c.org_id == org_id)
            )
        ).all()
    assert ("policies.create", pol["id"]) in [tuple(r) for r in rows]
    if mode == "production":
        assert api.cp.audit.single.get_execution_options()["isolation_level"] == "AUTOCOMMIT"
