"""The uplink protocol against a real gateway (TLS 1.3, mutual TLS): hello/welcome/policies,
heartbeats, event batches and acks, inventory, renewal, refusals, bad frames, takeover."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography import x509

from common import uplink
from common.pki import make_csr
from control_plane import schema as t
from tests.control_plane.conftest import Api
from tests.control_plane.mock_agent import Enrolled, enroll, event, org_id
from tests.control_plane.test_policies_alerts import POLICY, new_vault
from tests.control_plane.test_stream import next_event

FP = "sha256:" + "ab" * 32
LABEL = "kvl1." + "A" * 40


def inv(secret_id: str, version: int = 1, **extra: Any) -> dict[str, Any]:
    data = {
        "secret_id": secret_id,
        "version": version,
        "created_at": "2026-03-01T10:00:00Z",
        "updated_at": "2026-03-01T10:00:00Z",
        "deleted_at": None,
        "destroyed": False,
        "policy_id": None,
        "rotation": None,
        "label": None,
    }
    return {**data, **extra}


async def _setup(api: Api, tmp_path: Path) -> tuple[str, Enrolled]:
    owner = await api.org("Acme", "owner@acme.test")
    return owner, await enroll(api, owner, tmp_path / "agent")


async def test_hello_welcome_policies_heartbeat(api: Api, tmp_path: Path) -> None:
    owner, agent = await _setup(api, tmp_path)
    _, everywhere = await api.call("POST", "/policies", owner, json=POLICY)
    other = await new_vault(api, owner, "other")  # scopes name vaults that exist
    scoped = {**POLICY, "name": "elsewhere", "scope": {"vault_ids": [other]}}
    assert (await api.call("POST", "/policies", owner, json=scoped))[0] == 201
    stream = await api.client.ws_connect(
        "/api/v1/stream", headers={"Authorization": f"Bearer {owner}"}
    )
    await next_event(stream, "hello")
    link = await agent.online()
    assert link.welcome["protocol"] == 1 and link.welcome["vault_id"] == agent.vault_id
    assert link.welcome["heartbeat_interval_seconds"] == api.cp.settings.uplink_heartbeat_seconds
    assert [p["id"] for p in link.policies] == [everywhere["id"]]
    assert link.policies[0]["body"]["rotator"]["type"] == "random"
    assert (await next_event(stream, "vault.status"))["data"] == {
        "vault_id": agent.vault_id,
        "status": "online",
    }
    health = {
        "version": "0.1.0",
        "uptime_seconds": 12.5,
        "counts": {"secrets": 3, "versions": 7, "tokens": 2},
        "storage_bytes": 123456,
        "outbox_depth": 0,
        "certificate_not_after": "2026-03-02T10:00:00Z",
        "audit_head": {"seq": 42, "mac": "ab" * 32},
        "integrity_failures": 0,
        "audit_failures": 0,
        "policies_version": "cd" * 32,
    }
    await link.heartbeat(**health)
    for _ in range(100):
        _, vault = await api.call("GET", f"/vaults/{agent.vault_id}", owner)
        if vault["health"]:
            break
        await asyncio.sleep(0.02)
    assert vault["status"] == "online" and vault["health"]["counts"]["secrets"] == 3
    assert vault["agent_version"] == "0.1.0"
    await link.heartbeat(storage_bytes=None, audit_head=None, certificate_not_after=None)
    assert (await link.events("outbox", [event(1, "inventory", inv("sec_a"))]))["upto"] == 1
    changed = await next_event(stream, "inventory.changed")  # which vault only, for open views
    assert changed["data"] == {"vault_id": agent.vault_id, "items": 1, "secrets": 1}
    _, text = await api.call("GET", "/metrics")
    assert "keyvault_cp_uplink_connections 1" in text
    assert "keyvault_cp_uplink_heartbeat_seconds_count 2" in text
    await link.close()
    await stream.close()


async def test_policy_change_is_pushed(api: Api, tmp_path: Path) -> None:
    owner, agent = await _setup(api, tmp_path)
    link = await agent.online()
    assert link.policies == []
    _, pol = await api.call("POST", "/policies", owner, json=POLICY)
    pushed = await link.recv("policies")
    assert [(p["id"], p["version"]) for p in pushed["policies"]] == [(pol["id"], 1)]
    await api.call("PUT", f"/policies/{pol['id']}", owner, json={"interval_seconds": 7200})
    pushed = await link.recv("policies")
    assert pushed["policies"][0]["version"] == 2
    assert pushed["policies"][0]["body"]["interval_seconds"] == 7200
    await api.call("DELETE", f"/policies/{pol['id']}", owner)
    assert (await link.recv("policies"))["policies"] == []
    await link.close()


async def test_metadata_key_fingerprint_checks(api: Api, tmp_path: Path) -> None:
    owner, agent = await _setup(api, tmp_path)
    stream = await api.client.ws_connect(
        "/api/v1/stream", headers={"Authorization": f"Bearer {owner}"}
    )
    await next_event(stream, "hello")
    # the agent has a key, the organisation none
    link = await agent.connect()
    await link.send(
        {
            "type": "hello",
            "protocol": 1,
            "vault_id": agent.vault_id,
            "agent_version": "0.1.0",
            "metadata_key_fingerprint": FP,
        }
    )
    code, frames = await link.closed()
    assert code == uplink.CLOSE_REFUSED and frames[-1]["code"] == uplink.ERR_METADATA_KEY
    await link.close()
    # the operators are told why, so an enrollment screen need not show "pending" forever
    refused = (await next_event(stream, "vault.refused"))["data"]
    assert refused == {
        "vault_id": agent.vault_id,
        "code": uplink.ERR_METADATA_KEY,
        "message": frames[-1]["message"],
    }
    await stream.close()
    assert (await api.call("PUT", "/org/metadata-key", owner, json={"fingerprint": FP}))[0] == 200
    for wrong in (None, "sha256:" + "cd" * 32):
        link = await agent.connect()
        await link.send(
            {
                "type": "hello",
                "protocol": 1,
                "vault_id": agent.vault_id,
                "agent_version": "0.1.0",
                "metadata_key_fingerprint": wrong,
            }
        )
        code, frames = await link.closed()
        assert code == uplink.CLOSE_REFUSED, wrong
        assert frames == [
            {"type": "error", "code": uplink.ERR_METADATA_KEY, "message": frames[0]["message"]}
        ]
        await link.close()
    link = await agent.online(FP)
    # the owner registers another key: the connected agent is told and closed
    new = "sha256:" + "ef" * 32
    assert (await api.call("PUT", "/org/metadata-key", owner, json={"fingerprint": new}))[0] == 200
    code, frames = await link.closed()
    assert code == uplink.CLOSE_REFUSED and frames[-1]["code"] == uplink.ERR_METADATA_KEY
    await link.close()


async def test_hello_must_name_the_certificates_vault(api: Api, tmp_path: Path) -> None:
    owner, agent = await _setup(api, tmp_path)
    other = await enroll(api, owner, tmp_path / "other", "vault-2")
    link = await agent.connect()
    await link.send(
        {"type": "hello", "protocol": 1, "vault_id": other.vault_id, "agent_version": "0.1.0"}
    )
    code, frames = await link.closed()
    assert code == uplink.CLOSE_REFUSED and frames[-1]["code"] == uplink.ERR_UNKNOWN_VAULT
    await link.close()


async def test_events_acked_and_redelivery_counted_once(api: Api, tmp_path: Path) -> None:
    owner, agent = await _setup(api, tmp_path)
    link = await agent.online()
    batch = [
        event(
            seq,
            "audit",
            {
                "op": "secrets.read",
                "outcome": "ok",
                "status": 200,
                "actor": "tok_1",
                "secret_id": "sec_abc",
            },
            prefix="a",
        )
        for seq in range(1, 6)
    ]
    assert await link.events("audit", batch) == {"type": "ack", "stream": "audit", "upto": 5}
    assert await link.events("audit", batch) == {"type": "ack", "stream": "audit", "upto": 5}
    more = [event(6, "audit", {"op": "secrets.create", "outcome": "ok"}, prefix="a")]
    assert (await link.events("audit", batch[3:] + more))["upto"] == 6
    _, usage = await api.call("GET", "/analytics/usage?from=2026-03-01&to=2026-03-01", owner)
    counts = {(r["vault_id"], r["operation"]): r["count"] for r in usage["rows"]}
    assert counts == {(agent.vault_id, "secrets.read"): 5, (agent.vault_id, "secrets.create"): 1}
    _, log = await api.call("GET", f"/audit?source={agent.vault_id}", owner)
    assert len(log["items"]) == 6
    assert log["items"][0]["target"] == "sec_abc" and log["items"][0]["details"] == {"status": 200}
    _, text = await api.call("GET", "/metrics")
    assert "keyvault_cp_uplink_events_accepted_total 6" in text
    assert "keyvault_cp_uplink_events_duplicate_total 7" in text
    await link.close()


async def test_inventory_upsert_destroy_sync(api: Api, tmp_path: Path) -> None:
    owner, agent = await _setup(api, tmp_path)
    link = await agent.online()
    rotation = {
        "state": "due",
        "last_rotated_at": None,
        "next_due_at": "2026-04-01T00:00:00Z",
    }
    batch = [
        event(1, "inventory", inv("sec_a", label=LABEL, policy_id="pol_x", rotation=rotation)),
        event(2, "inventory", inv("sec_b")),
        event(3, "inventory", inv("sec_c")),
        event(4, "inventory", inv("sec_a", 2, label=LABEL)),  # latest wins
    ]
    assert (await link.events("outbox", batch))["upto"] == 4
    _, page = await api.call("GET", f"/vaults/{agent.vault_id}/inventory", owner)
    items = {i["secret_id"]: i for i in page["items"]}
    assert sorted(items) == ["sec_a", "sec_b", "sec_c"] and page["next_cursor"] is None
    assert items["sec_a"]["version"] == 2 and items["sec_a"]["label"] == LABEL
    assert items["sec_a"]["rotation"] is None and items["sec_a"]["reported_at"]
    _, first = await api.call("GET", f"/vaults/{agent.vault_id}/inventory?limit=2", owner)
    assert [i["secret_id"] for i in first["items"]] == ["sec_a", "sec_b"]
    _, rest = await api.call(
        "GET", f"/vaults/{agent.vault_id}/inventory?cursor={first['next_cursor']}", owner
    )
    assert [i["secret_id"] for i in rest["items"]] == ["sec_c"]
    batch = [
        event(5, "inventory", inv("sec_b", destroyed=True)),
        event(6, "inventory", inv("sec_d", rotation=rotation)),
        event(7, "inventory_sync", {"secret_ids": ["sec_a", "sec_d"]}),
        event(8, "inventory", inv("sec_e", deleted_at="2026-03-02T00:00:00Z")),
    ]
    assert (await link.events("outbox", batch))["upto"] == 8
    _, page = await api.call("GET", f"/vaults/{agent.vault_id}/inventory", owner)
    items = {i["secret_id"]: i for i in page["items"]}
    assert sorted(items) == ["sec_a", "sec_d", "sec_e"]
    assert items["sec_d"]["rotation"] == rotation
    assert items["sec_e"]["deleted_at"] == "2026-03-02T00:00:00Z"
    other = await api.org("Globex", "owner@globex.test")
    assert (await api.call("GET", f"/vaults/{agent.vault_id}/inventory", other))[0] == 404
    await link.close()


async def test_agent_alert_events_raise_once(api: Api, tmp_path: Path) -> None:
    owner, agent = await _setup(api, tmp_path)
    link = await agent.online()
    alert = {"kind": "integrity_failure", "message": "a stored value failed its integrity check"}
    batch = [event(1, "alert", alert), event(2, "alert", alert)]
    await link.events("outbox", batch)
    await link.events("outbox", batch)
    _, alerts = await api.call("GET", "/alerts?state=open", owner)
    assert [(a["kind"], a["vault_id"]) for a in alerts["items"]] == [
        ("integrity_failure", agent.vault_id)
    ]
    assert alerts["items"][0]["severity"] == "critical"
    await link.close()


BAD_FRAMES: list[tuple[str, Any]] = [
    ("not json", "{nope"),
    ("binary", b"\x00\x01"),
    ("array", "[1]"),
    ("unknown type", {"type": "gossip"}),
    ("server type", {"type": "welcome"}),
    ("second hello", {"type": "hello", "protocol": 1, "vault_id": "x", "agent_version": "1"}),
    ("heartbeat no health", {"type": "heartbeat"}),
    ("heartbeat bad status", {"type": "heartbeat", "health": {"status": "great"}}),
    ("heartbeat extra", {"type": "heartbeat", "health": {"status": "healthy", "name": "db"}}),
    ("heartbeat bad count", {"type": "heartbeat", "health": {"status": "healthy", "counts": {"secrets": -1}}}),
    ("events bad stream", {"type": "events", "stream": "x", "batch": [event(1, "alert", {})]}),
    ("events empty", {"type": "events", "stream": "outbox", "batch": []}),
    ("events too many", {"type": "events", "stream": "outbox", "batch": [event(i, "inventory", inv("s")) for i in range(1, 502)]}),
    ("audit kind in outbox", {"type": "events", "stream": "outbox", "batch": [event(1, "audit", {"op": "x", "outcome": "ok"})]}),
    ("seq not increasing", {"type": "events", "stream": "outbox", "batch": [event(2, "inventory", inv("a")), event(2, "inventory", inv("b"))]}),
    ("seq bool", {"type": "events", "stream": "outbox", "batch": [{**event(1, "inventory", inv("a")), "seq": True}]}),
    ("bad event id", {"type": "events", "stream": "outbox", "batch": [{**event(1, "inventory", inv("a")), "id": "a b"}]}),
    ("bad time", {"type": "events", "stream": "outbox", "batch": [{**event(1, "inventory", inv("a")), "at": "yesterday"}]}),
    ("label unsealed", {"type": "events", "stream": "outbox", "batch": [event(1, "inventory", inv("a", label="db/password"))]}),
    ("label too long", {"type": "events", "stream": "outbox", "batch": [event(1, "inventory", inv("a", label="kvl1." + "A" * 8200))]}),
    ("label bad chars", {"type": "events", "stream": "outbox", "batch": [event(1, "inventory", inv("a", label="kvl1.a+b/c="))]}),
    ("inventory extra", {"type": "events", "stream": "outbox", "batch": [event(1, "inventory", inv("a", name="db"))]}),
    ("inventory bad version", {"type": "events", "stream": "outbox", "batch": [event(1, "inventory", inv("a", "2"))]}),
    ("sync not list", {"type": "events", "stream": "outbox", "batch": [event(1, "inventory_sync", {"secret_ids": "a"})]}),
    ("result bad outcome", {"type": "events", "stream": "outbox", "batch": [event(1, "command_result", {"command_id": "cmd_1", "outcome": "meh"})]}),
    ("alert unknown kind", {"type": "events", "stream": "outbox", "batch": [event(1, "alert", {"kind": "vault_offline", "message": "x"})]}),
    ("audit bad outcome", {"type": "events", "stream": "audit", "batch": [event(1, "audit", {"op": "x", "outcome": "fine"})]}),
    ("deep nesting", '{"type": "heartbeat", "health": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ("year overflow", {"type": "events", "stream": "outbox", "batch": [{**event(1, "inventory", inv("a")), "at": "9999-12-31T23:59:59-05:00"}]}),
    ("nan uptime", '{"type": "heartbeat", "health": {"status": "healthy", "uptime_seconds": NaN}}'),
    ("huge int", {"type": "heartbeat", "health": {"status": "healthy", "outbox_depth": 10**30}}),
    ("renew no csr", {"type": "renew"}),
    ("renew huge csr", {"type": "renew", "csr": "x" * 9000}),
]  # fmt: skip


async def test_bad_frames_close_4400_and_never_crash(api: Api, tmp_path: Path) -> None:
    _owner, agent = await _setup(api, tmp_path)
    for name, frame in BAD_FRAMES:
        link = await agent.online()
        if isinstance(frame, bytes):
            await link.ws.send_bytes(frame)
        elif isinstance(frame, str):
            await link.ws.send_str(frame)
        else:
            await link.send(frame)
        code, frames = await link.closed()
        assert code == uplink.CLOSE_PROTOCOL, (name, code, frames)
        assert frames[-1]["type"] == "error" and frames[-1]["code"] == uplink.ERR_PROTOCOL, name
        await link.close()
    # bad hellos and a missing hello
    bad_hellos: list[dict[str, Any]] = [
        {"type": "heartbeat", "health": {"status": "healthy"}},
        {"type": "hello", "protocol": 2, "vault_id": agent.vault_id, "agent_version": "1"},
        {"type": "hello", "protocol": 1, "vault_id": agent.vault_id, "agent_version": "a b"},
        {"type": "hello", "protocol": 1, "vault_id": agent.vault_id, "agent_version": "1", "x": 1},
        {
            "type": "hello",
            "protocol": 1,
            "vault_id": agent.vault_id,
            "agent_version": "1",
            "metadata_key_fingerprint": "md5:x",
        },
    ]
    for hello in bad_hellos:
        link = await agent.connect()
        await link.send(hello)
        code, frames = await link.closed()
        assert code == uplink.CLOSE_PROTOCOL, (hello, code)
        await link.close()
    # nothing was stored from the refused batches, and the gateway still serves
    async with api.cp.engine.connect() as conn:
        assert (
            await conn.execute(sa.select(sa.func.count()).select_from(t.inventory))
        ).scalar() == 0
    link = await agent.online()
    assert (await link.events("outbox", [event(1, "inventory", inv("sec_ok"))]))["upto"] == 1
    await link.close()
    _, text = await api.call("GET", "/metrics")
    assert f"keyvault_cp_uplink_frames_refused_total {len(BAD_FRAMES) + len(bad_hellos)}" in text


async def test_hello_timeout(api: Api, tmp_path: Path, monkeypatch: Any) -> None:
    from control_plane.gateway import agent_link

    monkeypatch.setattr(agent_link, "HELLO_TIMEOUT", 0.3)
    _, agent = await _setup(api, tmp_path)
    link = await agent.connect()
    code, frames = await link.closed()
    assert code == uplink.CLOSE_PROTOCOL and "hello" in frames[-1]["message"]
    await link.close()


async def test_newer_connection_replaces_older(api: Api, tmp_path: Path) -> None:
    _owner, agent = await _setup(api, tmp_path)
    first = await agent.online()
    second = await agent.online()
    code, _ = await first.closed()
    assert code == uplink.CLOSE_REPLACED
    await first.close()
    await second.heartbeat()
    assert (await second.events("outbox", [event(1, "inventory", inv("sec_a"))]))["upto"] == 1
    _, text = await api.call("GET", "/metrics")
    assert "keyvault_cp_uplink_connections 1" in text
    await second.close()
    # the replaced connection's close did not mark the vault disconnected
    async with api.cp.engine.connect() as conn:
        row = (await conn.execute(sa.select(t.vaults).where(t.vaults.c.id == agent.vault_id))).one()
    assert row.conn_gen == 2


async def test_revoked_while_connected(api: Api, tmp_path: Path) -> None:
    owner, agent = await _setup(api, tmp_path)
    link = await agent.online()
    assert (await api.call("POST", f"/vaults/{agent.vault_id}/revoke", owner))[0] == 200
    code, frames = await link.closed()
    assert code == uplink.CLOSE_REFUSED and frames[-1]["code"] == uplink.ERR_REVOKED
    await link.close()


async def test_certificate_renewal(api: Api, tmp_path: Path) -> None:
    owner, agent = await _setup(api, tmp_path)
    org = await org_id(api, owner)
    _, before = await api.call("GET", f"/vaults/{agent.vault_id}", owner)
    # the certificate nears its end: the sweep raises certificate_expiring
    assert await api.cp.vaults.sweep_certificates() == 0
    api.clock.advance((api.cp.settings.cert_valid_hours - 5) * 3600)
    owner = await api.login("owner@acme.test")  # the session expired meanwhile
    assert await api.cp.vaults.sweep_certificates() == 1
    assert await api.cp.vaults.sweep_certificates() == 0
    _, alerts = await api.call("GET", "/alerts?state=open", owner)
    assert [(a["kind"], a["vault_id"]) for a in alerts["items"]] == [
        ("certificate_expiring", agent.vault_id)
    ]
    link = await agent.online()
    await link.send({"type": "renew", "csr": "-----BEGIN CERTIFICATE REQUEST-----\nxx"})
    failed = await link.recv()
    assert failed["type"] == "error" and failed["code"] == uplink.ERR_RENEWAL
    csr, _key = make_csr("whatever-the-agent-asks")
    await link.send({"type": "renew", "csr": csr.decode()})
    reply = await link.recv("certificate")
    leaf = x509.load_pem_x509_certificate(reply["certificate"].encode())
    org_ca = x509.load_pem_x509_certificate(reply["ca_certificate"].encode())
    assert leaf.subject.rfc4514_string() == f"CN={agent.vault_id}"
    leaf.verify_directly_issued_by(org_ca)
    assert org_ca == (await api.cp.vaults.cas.get(org)).cert
    _, after = await api.call("GET", f"/vaults/{agent.vault_id}", owner)
    assert after["certificate_serial"] == format(leaf.serial_number, "x")
    assert after["certificate_serial"] != before["certificate_serial"]
    assert after["certificate_not_after"] > before["certificate_not_after"]
    _, alerts = await api.call("GET", "/alerts?state=resolved", owner)
    assert [a["kind"] for a in alerts["items"]] == ["certificate_expiring"]
    assert await api.cp.vaults.sweep_certificates() == 0
    await link.heartbeat()  # the socket is still fine after a failed renewal
    await link.close()
