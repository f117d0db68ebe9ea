"""The control plane checks that each vault's audit head only moves forward (embedded and on
PostgreSQL + Redis, over a real gateway): a heartbeat whose head is behind what the vault already
reported, entries from an older chain epoch, a chain that restarted, and an entry re-sent with
another chain MAC (a rewritten history) each raise an ``audit_failure`` alert."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from common import uplink
from control_plane import schema as t
from tests.control_plane.conftest import Api
from tests.control_plane.mock_agent import Enrolled, Uplink, enroll


def _mac(seq: int, epoch: int = 1, salt: str = "") -> str:
    return hashlib.sha256(f"{epoch}:{seq}:{salt}".encode()).hexdigest()


def audit(seq: int, epoch: int = 1, salt: str = "", chain: int = 0) -> dict[str, Any]:
    """One audit event as the agent sends it: id from (chain, epoch, seq), its chain MAC;
    worker k's (``workers: N``) carries ``data.chain = k``, chain 0's no such field."""
    data: dict[str, Any] = {
        "op": "secrets.read",
        "outcome": "ok",
        "status": 200,
        "epoch": epoch,
        "mac": _mac(seq, epoch, f"w{chain}{salt}" if chain else salt),
    }
    if chain:
        data["chain"] = chain
    return {
        "id": uplink.audit_event_id(seq, epoch, chain),
        "seq": seq,
        "kind": "audit",
        "at": "2026-03-01T10:00:00Z",
        "data": data,
    }


def _old_audit(seq: int, epoch: int = 1, salt: str = "") -> dict[str, Any]:
    """Chain 0's event exactly as agents before worker chains built it."""
    return {
        "id": f"a{seq}" if epoch == 1 else f"a{epoch}.{seq}",
        "seq": seq,
        "kind": "audit",
        "at": "2026-03-01T10:00:00Z",
        "data": {
            "op": "secrets.read",
            "outcome": "ok",
            "status": 200,
            "epoch": epoch,
            "mac": _mac(seq, epoch, salt),
        },
    }


async def _audit_alerts(api: Api, owner: str, vault_id: str) -> list[str]:
    _, alerts = await api.call("GET", "/alerts?state=open", owner)
    return [
        a["message"]
        for a in alerts["items"]
        if a["kind"] == "audit_failure" and a["vault_id"] == vault_id
    ]


async def _setup(api: Api, tmp_path: Path) -> tuple[str, Enrolled, Uplink]:
    owner = await api.org("Acme", "owner@acme.test")
    agent = await enroll(api, owner, tmp_path / "agent")
    return owner, agent, await agent.online()


async def _head(api: Api, vault_id: str) -> tuple[int, int]:
    v = t.vaults
    async with api.cp.engine.connect() as conn:
        row = (
            await conn.execute(sa.select(v.c.audit_epoch, v.c.audit_seq).where(v.c.id == vault_id))
        ).one()
    return int(row.audit_epoch), int(row.audit_seq)


async def _handled(link: Uplink) -> None:
    """Frames are served in order: once a later batch is acked, the heartbeat was handled."""
    assert (await link.events("audit", [audit(1)]))["upto"] == 1


async def test_a_head_that_moves_backwards_raises_an_alert(api: Api, tmp_path: Path) -> None:
    owner, agent, link = await _setup(api, tmp_path)
    assert (await link.events("audit", [audit(s) for s in range(1, 6)]))["upto"] == 5
    assert await _head(api, agent.vault_id) == (1, 5)
    await link.heartbeat(audit_head={"seq": 5, "mac": _mac(5), "epoch": 1})
    await link.heartbeat(audit_head={"seq": 7, "mac": _mac(7)})  # ahead of shipping: fine
    await _handled(link)
    assert (await link.events("audit", [audit(4), audit(5)]))["upto"] == 5  # plain redelivery
    assert await _audit_alerts(api, owner, agent.vault_id) == []
    await link.close()

    # the whole host restored from an older backup: its head is behind what it reported
    link = await agent.online()
    await link.heartbeat(audit_head={"seq": 2, "mac": _mac(2), "epoch": 1})
    await _handled(link)
    messages = await _audit_alerts(api, owner, agent.vault_id)
    assert len(messages) == 1 and "backwards" in messages[0], messages
    assert "2" in messages[0] and "5" in messages[0]
    assert await _head(api, agent.vault_id) == (1, 5)  # the high-water mark stays

    # the agent started a new chain (its log was lost): entries of epoch 2 are stored, not
    # dropped as duplicates of epoch 1's ids, and the restart is an alert of its own
    assert (await link.events("audit", [audit(1, 2), audit(2, 2)]))["upto"] == 2
    assert await _head(api, agent.vault_id) == (2, 2)
    messages = await _audit_alerts(api, owner, agent.vault_id)
    assert any("epoch" in m and "restarted" in m for m in messages), messages
    _, log = await api.call("GET", f"/audit?source={agent.vault_id}", owner)
    assert len(log["items"]) == 7

    # entries of the older epoch after the new one: backwards again
    await api.cp.alerts.resolve_key(await _org(api, owner), f"audit_head:{agent.vault_id}")
    await link.events("audit", [audit(6)])
    messages = await _audit_alerts(api, owner, agent.vault_id)
    assert any("backwards" in m and "epoch 1" in m for m in messages), messages
    assert await _head(api, agent.vault_id) == (2, 2)
    await link.close()


async def test_rewritten_audit_history_raises_an_alert(api: Api, tmp_path: Path) -> None:
    owner, agent, link = await _setup(api, tmp_path)
    assert (await link.events("audit", [audit(s) for s in range(1, 4)]))["upto"] == 3
    # a redelivery with the same content is silent
    assert (await link.events("audit", [audit(2), audit(3)]))["upto"] == 3
    assert await _audit_alerts(api, owner, agent.vault_id) == []
    # entry 3 comes again with another chain MAC: someone rewrote the log (or restored an
    # older copy and the agent wrote new entries over the same numbers)
    assert (await link.events("audit", [audit(3, salt="forged"), audit(4)]))["upto"] == 4
    messages = await _audit_alerts(api, owner, agent.vault_id)
    assert len(messages) == 1 and "rewritten" in messages[0] and "3" in messages[0], messages
    # the stored entry is the first one; usage counted it once
    async with api.cp.engine.connect() as conn:
        macs = list(
            await conn.execute(
                sa.select(t.audit.c.chain_mac).where(t.audit.c.event_id == f"{agent.vault_id}:a3")
            )
        )
    assert [m.chain_mac for m in macs] == [_mac(3)]
    _, usage = await api.call("GET", "/analytics/usage?from=2026-03-01&to=2026-03-01", owner)
    assert [r["count"] for r in usage["rows"]] == [4]
    await link.close()


async def _org(api: Api, owner: str) -> str:
    _, me = await api.call("GET", "/me", owner)
    return str(me["org"]["id"])


async def _chain_head(api: Api, vault_id: str, chain: int) -> tuple[int, int] | None:
    c = t.audit_chains
    async with api.cp.engine.connect() as conn:
        q = sa.select(c.c.audit_epoch, c.c.audit_seq).where(
            c.c.vault_id == vault_id, c.c.chain == chain
        )
        row = (await conn.execute(q)).one_or_none()
    return None if row is None else (int(row.audit_epoch), int(row.audit_seq))


async def _alert_keys(api: Api, owner: str, vault_id: str) -> dict[str, str]:
    """Open audit_failure alerts of the vault: dedup key -> message."""
    org = await _org(api, owner)
    a = t.alerts
    async with api.cp.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(a.c.dedupe_key, a.c.message).where(
                a.c.org_id == org, a.c.kind == "audit_failure", a.c.vault_id == vault_id
            )
        )
        return {r.dedupe_key: r.message for r in rows}


async def test_worker_chains_are_stored_and_checked_each_on_its_own(
    api: Api, tmp_path: Path
) -> None:
    owner, agent, link = await _setup(api, tmp_path)
    assert link.welcome["audit_chains"] == uplink.MAX_AUDIT_CHAIN
    vid = agent.vault_id
    # chain 0 as agents always sent it, and worker 1's chain with the same seqs: both stored
    assert (await link.events("audit", [_old_audit(s) for s in range(1, 4)]))["upto"] == 3
    assert (await link.events("audit", [audit(s, chain=1) for s in range(1, 6)]))["upto"] == 5
    assert await _head(api, vid) == (1, 3)  # chain 0's head did not move with chain 1's
    assert await _chain_head(api, vid, 1) == (1, 5)
    _, log = await api.call("GET", f"/audit?source={vid}&limit=100", owner)
    assert len(log["items"]) == 8
    async with api.cp.engine.connect() as conn:
        rows = list(
            await conn.execute(
                sa.select(t.audit.c.event_id, t.audit.c.details).where(
                    t.audit.c.event_id.like(f"{vid}:w1.%")
                )
            )
        )
    assert sorted(r.event_id for r in rows) == [f"{vid}:w1.a{s}" for s in range(1, 6)]
    assert all(json.loads(r.details)["chain"] == 1 for r in rows)
    # a plain redelivery of worker 1's entries is silent
    assert (await link.events("audit", [audit(4, chain=1), audit(5, chain=1)]))["upto"] == 5
    assert await _audit_alerts(api, owner, vid) == []

    # worker 1's entry 4 comes again with another MAC: rewritten, keyed to chain w1 only
    assert (await link.events("audit", [audit(4, salt="forged", chain=1)]))["upto"] == 4
    keys = await _alert_keys(api, owner, vid)
    assert list(keys) == [f"audit_rewritten:{vid}:w1"], keys
    assert "worker 1" in keys[f"audit_rewritten:{vid}:w1"]
    # the same seq on chain 0 is its own entry: not a rewrite of chain 1's
    assert (await link.events("audit", [_old_audit(4)]))["upto"] == 4
    assert list(await _alert_keys(api, owner, vid)) == [f"audit_rewritten:{vid}:w1"]

    # worker 1's chain restarts (epoch 2), then entries of its older epoch arrive: backwards
    assert (await link.events("audit", [audit(1, 2, chain=1)]))["upto"] == 1
    assert await _chain_head(api, vid, 1) == (2, 1)
    assert (await link.events("audit", [audit(6, chain=1)]))["upto"] == 6
    keys = await _alert_keys(api, owner, vid)
    assert f"audit_epoch:{vid}:w1" in keys and f"audit_head:{vid}:w1" in keys, keys
    assert "backwards" in keys[f"audit_head:{vid}:w1"]
    assert await _chain_head(api, vid, 1) == (2, 1)  # the high-water mark stays
    # chain 0 is unaffected: its head, and no alert keyed to it
    assert await _head(api, vid) == (1, 4)
    assert not any(k.endswith(f":{vid}") for k in keys), keys
    # a second worker chain appears later: its own head from scratch
    assert (await link.events("audit", [audit(1, chain=2)]))["upto"] == 1
    assert await _chain_head(api, vid, 2) == (1, 1)
    assert not any(k.endswith(":w2") for k in await _alert_keys(api, owner, vid))
    await link.close()


def _chain(k: int, seq: int, epoch: int = 1) -> dict[str, Any]:
    """Worker k's head as a heartbeat's ``audit_chains`` lists it."""
    return {"chain": k, "seq": seq, "mac": _mac(seq, epoch, f"w{k}"), "epoch": epoch}


async def test_a_worker_chains_heartbeat_head_that_moves_backwards_raises_an_alert(
    api: Api, tmp_path: Path
) -> None:
    owner, agent, link = await _setup(api, tmp_path)
    vid = agent.vault_id
    assert (await link.events("audit", [audit(s, chain=1) for s in range(1, 6)]))["upto"] == 5
    assert (await link.events("audit", [audit(s, chain=2) for s in range(1, 3)]))["upto"] == 2
    # heads at or ahead of what was shipped, chain by chain: silent
    await link.heartbeat(audit_chains=[_chain(1, 5), _chain(2, 4)])
    await link.heartbeat(audit_chains=[_chain(1, 6), _chain(2, 4)])
    await _handled(link)
    assert await _alert_keys(api, owner, vid) == {}
    await link.close()

    # the host restored from an older copy: worker 1's log is behind what it shipped, worker
    # 2's is not (what an earlier heartbeat on a closed socket said is not a mark here)
    link = await agent.online()
    await link.heartbeat(audit_chains=[_chain(1, 3), _chain(2, 2)])
    await _handled(link)
    keys = await _alert_keys(api, owner, vid)
    assert list(keys) == [f"audit_head:{vid}:w1"], keys
    message = keys[f"audit_head:{vid}:w1"]
    assert "worker 1" in message and "backwards" in message, message
    assert "entry 5" in message and "entry 3" in message, message
    assert await _chain_head(api, vid, 1) == (1, 5)  # the stored mark stays

    # on the same socket, a head reported once is a mark: worker 2 going back below it alerts
    await link.heartbeat(audit_chains=[_chain(2, 9)])
    await link.heartbeat(audit_chains=[_chain(2, 7)])
    await _handled(link)
    keys = await _alert_keys(api, owner, vid)
    assert f"audit_head:{vid}:w2" in keys and "worker 2" in keys[f"audit_head:{vid}:w2"], keys

    # a worker chain that restarted says so in its heartbeat, before its first new entry
    await link.heartbeat(audit_chains=[_chain(3, 4), _chain(1, 1, epoch=2)])
    await _handled(link)
    keys = await _alert_keys(api, owner, vid)
    assert f"audit_epoch:{vid}:w1" in keys and "restarted" in keys[f"audit_epoch:{vid}:w1"]
    assert not any(k.endswith(":w3") for k in keys), keys  # a new chain of epoch 1: silent
    assert not any(k.endswith(f":{vid}") for k in keys), keys  # chain 0 untouched
    await link.close()


BAD_HEARTBEAT_CHAINS: list[tuple[str, Any]] = [
    ("not a list", {"chain": 1, "seq": 1, "mac": "ab"}),
    ("too many", [_chain(k, 1) for k in range(1, 66)]),
    ("chain 0", [_chain(0, 1)]),
    ("chain 65", [_chain(65, 1)]),
    ("chain bool", [{**_chain(1, 1), "chain": True}]),
    ("chain twice", [_chain(1, 1), _chain(1, 2)]),
    ("no chain", [{"seq": 1, "mac": "ab"}]),
    ("seq negative", [_chain(1, -1)]),
    ("mac not hex", [{**_chain(1, 1), "mac": "zz"}]),
    ("epoch 0", [{**_chain(1, 1), "epoch": 0}]),
    ("unknown field", [{**_chain(1, 1), "value": "s3cret"}]),
]


async def test_a_bad_heartbeat_chain_head_is_refused_as_a_bad_frame(
    api: Api, tmp_path: Path
) -> None:
    _owner, agent, link = await _setup(api, tmp_path)
    await link.close()
    for name, chains in BAD_HEARTBEAT_CHAINS:
        link = await agent.online()
        await link.heartbeat(audit_chains=chains)
        code, frames = await link.closed()
        assert code == uplink.CLOSE_PROTOCOL, (name, code, frames)
        assert frames[-1]["code"] == uplink.ERR_PROTOCOL, name
        assert "health.audit_chains" in frames[-1]["message"], (name, frames[-1])
        await link.close()


BAD_CHAIN_BATCHES: list[tuple[str, list[dict[str, Any]]]] = [
    ("chain 0 given", [{**audit(1), "data": {**audit(1)["data"], "chain": 0}}]),
    ("chain too high", [{**audit(1, chain=1), "id": "w65.a1", "data": {**audit(1)["data"], "chain": 65}}]),
    ("chain negative", [{**audit(1), "data": {**audit(1)["data"], "chain": -1}}]),
    ("chain bool", [{**audit(1), "id": "w1.a1", "data": {**audit(1)["data"], "chain": True}}]),
    ("chain text", [{**audit(1), "id": "w1.a1", "data": {**audit(1)["data"], "chain": "1"}}]),
    ("id of chain 0", [{**audit(1, chain=1), "id": "a1"}]),
    ("id of another chain", [{**audit(1, chain=1), "id": "w2.a1"}]),
    ("id of another epoch", [{**audit(3, 2, chain=1), "id": "w1.a3"}]),
    ("worker id without chain", [{**audit(1), "id": "w1.a1"}]),
    ("two chains in a batch", [audit(1), audit(2, chain=1)]),
]  # fmt: skip


async def test_a_bad_worker_chain_is_refused_as_a_bad_frame(api: Api, tmp_path: Path) -> None:
    _owner, agent, link = await _setup(api, tmp_path)
    await link.close()
    for name, batch in BAD_CHAIN_BATCHES:
        link = await agent.online()
        await link.send({"type": "events", "stream": "audit", "batch": batch})
        code, frames = await link.closed()
        assert code == uplink.CLOSE_PROTOCOL, (name, code, frames)
        assert frames[-1]["code"] == uplink.ERR_PROTOCOL, name
        assert "chain" in frames[-1]["message"] or ".id" in frames[-1]["message"], frames[-1]
        await link.close()
    assert await _chain_head(api, agent.vault_id, 1) is None  # nothing was stored
