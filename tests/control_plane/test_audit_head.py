"""The control plane checks that each vault's audit head only moves forward (embedded and on
PostgreSQL + Redis, over a real gateway): a heartbeat whose head is behind what the vault already
reported, entries from an older chain epoch, a chain that restarted, and an entry re-sent with
another chain MAC (a rewritten history) each raise an ``audit_failure`` alert."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from control_plane import schema as t
from tests.control_plane.conftest import Api
from tests.control_plane.mock_agent import Enrolled, Uplink, enroll


def _mac(seq: int, epoch: int = 1, salt: str = "") -> str:
    return hashlib.sha256(f"{epoch}:{seq}:{salt}".encode()).hexdigest()


def audit(seq: int, epoch: int = 1, salt: str = "") -> dict[str, Any]:
    """One audit event as the agent sends it: id from (epoch, seq), the entry's chain MAC."""
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
