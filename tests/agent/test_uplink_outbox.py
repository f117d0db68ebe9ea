"""The durable outbox on the store: change markers commit with the write they describe (and only
for an enrolled agent), a failed write leaves none, and the events built from them carry opaque
ids and sealed labels -- never a name."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.assembly import Agent
from agent.settings import load_agent_settings
from agent.uplink import audit_stream, inventory, meta, outbox
from common.errors import ConflictError, NotFoundError
from common.metadata_key import MetadataKey
from tests.conftest import init_agent_dir

VAULT = "vlt_test"


@pytest.fixture
async def agent(tmp_path: Path, storage_url: str | None) -> AsyncIterator[Agent]:
    folder = init_agent_dir(tmp_path / "agent", storage_url=storage_url)
    opened = Agent.open(load_agent_settings(None, folder.path))
    try:
        yield opened
    finally:
        opened.close()


async def _rows(agent: Agent) -> list[outbox.Row]:
    return await agent.store.read(lambda c: outbox.oldest(c, 10_000))


async def _markers(agent: Agent) -> list[str]:
    return [r.body["secret_id"] for r in await _rows(agent) if r.kind == outbox.INVENTORY]


async def test_an_unenrolled_agent_writes_no_outbox_rows(agent: Agent) -> None:
    meta = await agent.secrets.create("a/b", "v1")
    await agent.secrets.update(meta.id, value="v2")
    await agent.secrets.delete(meta.id)
    await agent.secrets.destroy(meta.id)
    assert await _rows(agent) == []


async def test_every_kind_of_write_marks_its_secret_in_the_same_transaction(agent: Agent) -> None:
    agent.secrets.feed.track()
    a = await agent.secrets.create("app/a", "1")
    await agent.secrets.update(a.id, value="2")
    await agent.secrets.update(a.id, description="metadata only")
    from agent.generate import GeneratorSpec

    await agent.secrets.rotate(a.id, GeneratorSpec())
    await agent.secrets.delete(a.id)
    await agent.secrets.undelete(a.id)
    await agent.secrets.delete(a.id)
    await agent.secrets.destroy(a.id)
    assert await _markers(agent) == [a.id] * 8


async def test_a_failed_write_leaves_no_marker(agent: Agent) -> None:
    agent.secrets.feed.track()
    a = await agent.secrets.create("app/a", "1")
    with pytest.raises(ConflictError):
        await agent.secrets.create("app/a", "again")
    with pytest.raises(ConflictError):
        await agent.secrets.undelete(a.id)
    with pytest.raises(ConflictError):
        await agent.secrets.destroy(a.id)
    with pytest.raises(NotFoundError):
        await agent.secrets.update("app/missing", value="x")

    def boom(conn: Any, new: Any) -> None:
        raise ConflictError("refused on purpose, after the marker was written")

    with pytest.raises(ConflictError):
        await agent.secrets.update(a.id, value="2", also=boom)
    assert await _markers(agent) == [a.id]
    assert (await agent.secrets.meta(a.id)).version == 1


async def test_resync_lists_every_secret_then_one_sync_event(agent: Agent) -> None:
    ids = sorted([(await agent.secrets.create(f"s/{i}", "v")).id for i in range(5)])
    await agent.secrets.delete(ids[0])  # soft-deleted secrets are still in the inventory
    count = await agent.store.write(outbox.resync("2026-01-01T00:00:00+00:00", VAULT))
    rows = await _rows(agent)
    assert count == 5
    assert [r.kind for r in rows] == [outbox.INVENTORY] * 5 + [outbox.INVENTORY_SYNC]
    assert rows[-1].body == {"secret_ids": ids}
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)


async def test_sequence_numbers_are_never_reused_after_the_outbox_empties(agent: Agent) -> None:
    agent.secrets.feed.track()
    await agent.secrets.create("x/1", "v")
    first = (await _rows(agent))[-1].seq
    await agent.store.write(lambda c: outbox.delete_upto(c, first))
    await agent.secrets.create("x/2", "v")
    assert (await _rows(agent))[0].seq > first


async def test_inventory_events_are_current_sealed_and_collapse_repeats(agent: Agent) -> None:
    key = MetadataKey.generate()
    agent.secrets.feed.track()
    a = await agent.secrets.create("db/prod/password", "v", description="the prod db",
                                   labels={"team": "core"})  # fmt: skip
    await agent.secrets.update(a.id, value="v2")
    b = await agent.secrets.create("gone/soon", "v")
    await agent.secrets.delete(b.id)
    await agent.secrets.destroy(b.id)
    rows = await _rows(agent)
    events = await agent.store.read(lambda c: inventory.events(c, rows, VAULT, key))
    assert [e["data"]["secret_id"] for e in events] == [a.id, b.id]
    assert events[-1]["seq"] == rows[-1].seq  # the ack of the last event covers every row
    live, destroyed = events[0]["data"], events[1]["data"]
    assert live["version"] == 2 and live["destroyed"] is False and live["deleted_at"] is None
    assert key.open(VAULT, a.id, live["label"]) == {
        "name": "db/prod/password", "description": "the prod db", "labels": {"team": "core"},
    }  # fmt: skip
    assert destroyed == {**destroyed, "destroyed": True, "version": 0, "label": None}
    text = json.dumps(events)
    for plain in ("db/prod/password", "the prod db", "gone/soon", "core"):
        assert plain not in text
    unsealed = await agent.store.read(lambda c: inventory.events(c, rows, VAULT, None))
    assert unsealed[0]["data"]["label"] is None


async def test_audit_targets_become_opaque_ids_or_null(agent: Agent) -> None:
    a = await agent.secrets.create("app/known", "v")
    entries = [
        {"seq": 1, "op": "secrets.read", "outcome": "ok", "status": 200, "actor": "tok_x",
         "target": "app/known", "time": "2026-01-01T00:00:00+00:00"},
        {"seq": 2, "op": "secrets.read", "outcome": "error", "status": 404, "actor": "tok_x",
         "target": "app/unknown-name", "time": "2026-01-01T00:00:00+00:00"},
        {"seq": 3, "op": "secrets.destroy", "outcome": "attempt", "status": 0, "actor": None,
         "target": a.id, "time": "2026-01-01T00:00:00+00:00"},
        {"seq": 4, "op": "tokens.revoke", "outcome": "ok", "status": 200, "actor": "tok_x",
         "target": "tok_other", "time": "2026-01-01T00:00:00+00:00"},
    ]  # fmt: skip
    ids = await agent.store.read(lambda c: audit_stream.resolve(c, entries))
    events = [audit_stream.event(e, ids) for e in entries]
    assert [e["data"]["secret_id"] for e in events] == [a.id, None, a.id, None]
    assert [e["id"] for e in events] == ["a1", "a2", "a3", "a4"]
    assert events[2]["data"]["status"] is None  # an intent entry has no HTTP status yet
    assert "app/known" not in json.dumps(events) and "unknown-name" not in json.dumps(events)


async def test_worker_chain_events_name_their_chain_and_chain_0_is_unchanged(
    agent: Agent,
) -> None:
    a = await agent.secrets.create("app/chained", "v")
    entry = {"seq": 7, "op": "secrets.read", "outcome": "ok", "status": 200, "actor": "tok_x",
             "target": "app/chained", "time": "2026-01-01T00:00:00+00:00", "mac": "ab" * 32}  # fmt: skip
    ids = await agent.store.read(lambda c: audit_stream.resolve(c, [entry]))
    own = {"op": "secrets.read", "outcome": "ok", "status": 200, "actor": "tok_x",
           "secret_id": a.id, "epoch": 1, "mac": "ab" * 32}  # fmt: skip
    # chain 0 exactly as before worker chains: no ``chain`` field, ids a<seq> / a<epoch>.<seq>
    assert audit_stream.event(entry, ids) == {
        "id": "a7", "seq": 7, "kind": "audit", "at": entry["time"], "data": own,
    }  # fmt: skip
    assert audit_stream.event(entry, ids, 3)["id"] == "a3.7"
    one = audit_stream.event(entry, ids, 1, 1)
    assert one["id"] == "w1.a7" and one["data"] == {**own, "chain": 1}
    assert audit_stream.event(entry, ids, 2, 12)["id"] == "w12.a2.7"
    assert "app/chained" not in json.dumps(one)


async def test_a_worker_chains_cursor_is_its_own_and_tied_to_the_vault(agent: Agent) -> None:
    doc = {"vault_id": VAULT, "epoch": 2, "seq": 40}
    await agent.store.write(lambda c: meta.put(c, meta.chain_cursor_key(1), doc))
    read = agent.store.read
    assert await read(lambda c: meta.chain_cursor(c, VAULT, 1)) == (2, 40)
    assert await read(lambda c: meta.chain_cursor(c, VAULT, 2)) == (0, 0)
    assert await read(lambda c: meta.chain_cursor(c, "vlt_other", 1)) == (0, 0)
    assert await read(lambda c: meta.audit_cursor(c, VAULT)) == 0  # chain 0's is another row


async def test_outbox_depth_counts_rows(agent: Agent) -> None:
    agent.secrets.feed.track()
    for i in range(3):
        await agent.secrets.create(f"d/{i}", "v")
    assert await agent.store.read(outbox.depth) == 3
    assert (
        await agent.store.read(lambda c: c.execute("SELECT count(*) FROM kv_commands").scalar_one())
        == 0
    )
