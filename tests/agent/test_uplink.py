"""The uplink client in-process against the fake gateway: hello and heartbeats, both event streams
with ack-then-delete and redelivery, nothing that names a secret, commands once only, renewal,
and the states that stop dialling (revoked, refused, expired) while the local API keeps serving."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from agent.api.app import build_app
from agent.assembly import Agent
from agent.audit import iter_entries
from agent.settings import load_agent_settings
from agent.uplink import meta, outbox
from agent.uplink.commands import INTERRUPTED
from agent.uplink.connection import FRAME_BURST
from agent.uplink.enroll import enroll
from agent.uplink.health import ALERT_TEXTS, policies_version
from agent.uplink.service import Uplink
from agent.uplink.state import same_key
from agent.workers import WorkerRole, create_counters
from common import intents
from common.metadata_key import MetadataKey
from common.uplink import REGISTER_PATH, UPLINK_PATH
from tests.agent.conftest import (
    INTENT_KEY,
    enroll_dir,
    running_uplink,
    sealed_command,
    sealed_policy,
)
from tests.agent.fake_gateway import FakeGateway, await_for
from tests.conftest import AgentDir, init_agent_dir


def _vault(folder: AgentDir) -> str:
    return str(json.loads((folder.path / "uplink" / "state.json").read_text())["vault_id"])


async def _rows(agent: Agent) -> list[outbox.Row]:
    return await agent.store.read(lambda c: outbox.oldest(c, 10_000))


def _inventory_ids(gw: FakeGateway) -> list[str]:
    return [e["data"]["secret_id"] for e in gw.accepted["outbox"] if e["kind"] == "inventory"]


async def test_hello_heartbeat_and_inventory(enrolled: AgentDir, gateway: FakeGateway) -> None:
    async with running_uplink(enrolled) as (agent, _):
        await await_for(lambda: agent.uplink.state == "connected", what="connected")
        made = await agent.secrets.create("app/one", "v1")
        await await_for(lambda: made.id in _inventory_ids(gateway), what="the inventory")
        await await_for(
            lambda: gateway.of_type("heartbeat")[-1]["health"]["counts"]["secrets"] == 1,
            what="a heartbeat counting it",
        )
        await await_for(lambda: agent.uplink.outbox_rows == 0, what="an empty outbox")
        assert await _rows(agent) == []
    hello = gateway.of_type("hello")[0]
    assert hello == {
        "type": "hello",
        "protocol": 1,
        "vault_id": _vault(enrolled),
        "agent_version": agent.version,
        "metadata_key_fingerprint": None,
    }
    health = gateway.of_type("heartbeat")[-1]["health"]
    assert set(health) == {
        "status", "version", "uptime_seconds", "counts", "storage_bytes", "outbox_depth",
        "certificate_not_after", "audit_head", "integrity_failures", "audit_failures",
        "policies_version",
    }  # fmt: skip
    assert health["status"] == "healthy" and health["counts"]["secrets"] == 1
    assert health["storage_bytes"] > 0
    assert health["policies_version"] == hashlib.sha256(b"[]").hexdigest()
    sync = [e for e in gateway.accepted["outbox"] if e["kind"] == "inventory_sync"]
    assert len(sync) == 1  # queued once, when this vault was first seen


async def test_an_enrollment_made_while_running_is_picked_up_with_a_full_resync(
    tmp_path: Path, gateway: FakeGateway
) -> None:
    folder = init_agent_dir(tmp_path / "agent")
    async with running_uplink(folder) as (agent, _):
        before = await agent.secrets.create("old/secret", "v")
        assert agent.uplink.state == "not_enrolled" and not agent.secrets.track_changes
        assert await _rows(agent) == []  # the unenrolled write path is unchanged
        await asyncio.to_thread(enroll_dir, folder, gateway)
        await await_for(lambda: agent.uplink.state == "connected", what="connected")
        await await_for(lambda: before.id in _inventory_ids(gateway), what="the resync")
        sync = [e for e in gateway.accepted["outbox"] if e["kind"] == "inventory_sync"]
        assert sync[0]["data"] == {"secret_ids": [before.id]}
        assert agent.uplink.vault_id == _vault(folder)


async def test_rows_are_deleted_only_after_the_ack_and_resent_after_a_reconnect(
    enrolled: AgentDir, gateway: FakeGateway
) -> None:
    gateway.auto_ack = False
    async with running_uplink(enrolled) as (agent, _):
        made = [await agent.secrets.create(f"s/{i}", "v") for i in range(3)]
        await await_for(lambda: gateway.held_frames(), what="a batch")
        first = [e["id"] for f in gateway.held_frames() for e in f["batch"]]
        await asyncio.sleep(0.5)
        assert len(gateway.of_type("events")) == 1  # one batch in flight, no more
        assert len(await _rows(agent)) >= len(first)  # nothing deleted without an ack
        gateway.drop()
        await await_for(lambda: len(gateway.of_type("events")) >= 2, what="the redelivery")
        again = [e["id"] for e in gateway.of_type("events")[1]["batch"]]
        assert again[: len(first)] == first
        gateway.auto_ack = True
        gateway.ack_held()
        await await_for(lambda: agent.uplink.outbox_rows == 0, what="the outbox to drain")
        assert await _rows(agent) == []
    assert {m.id for m in made} <= set(_inventory_ids(gateway))


async def test_the_audit_stream_follows_the_log_from_its_cursor(
    enrolled: AgentDir, gateway: FakeGateway, aiohttp_client: Any
) -> None:
    async with running_uplink(enrolled) as (agent, _):
        client = await aiohttp_client(build_app(agent))
        auth = {"Authorization": f"Bearer {enrolled.token}"}
        for _ in range(3):
            assert (await client.get("/api/v1/health")).status == 200
        r = await client.post("/api/v1/secrets", json={"name": "a/b", "value": "x"}, headers=auth)
        assert r.status == 201
        head = agent.audit.head[0]
        await await_for(lambda: len(gateway.accepted["audit"]) >= head, what="the audit events")
        cursor = await agent.store.read(lambda c: meta.audit_cursor(c, _vault(enrolled)))
        assert cursor >= head
        assert [e["seq"] for e in gateway.accepted["audit"]] == list(range(1, cursor + 1))
        health = await (await client.get("/api/v1/health")).json()
        await client.close()
    sent = len(gateway.events("audit"))
    async with running_uplink(enrolled) as (agent, _):
        await await_for(lambda: agent.uplink.state == "connected", what="reconnected")
        await asyncio.sleep(0.5)
    resent = [e["seq"] for e in gateway.events("audit")[sent:]]
    assert all(seq > cursor for seq in resent)  # acknowledged entries are not sent again
    assert health["uplink"]["state"] == "connected"
    assert health["uplink"]["vault_id"] == _vault(enrolled)


async def test_worker_chains_go_only_to_a_control_plane_that_stores_them(
    enrolled: AgentDir, gateway: FakeGateway, aiohttp_client: Any
) -> None:
    settings = load_agent_settings(None, enrolled.path)
    create_counters(enrolled.path, 2)
    worker = await asyncio.to_thread(Agent.open, settings, None, WorkerRole(1, 2))
    try:  # worker 1 of ``workers: 2`` serves a write and a read by name: its own log
        client = await aiohttp_client(build_app(worker))
        auth = {"Authorization": f"Bearer {enrolled.token}"}
        body = {"name": "w1/only-name", "value": "x"}
        made = await (await client.post("/api/v1/secrets", json=body, headers=auth)).json()
        assert (await client.get("/api/v1/secrets/w1%2Fonly-name", headers=auth)).status == 200
        length = worker.audit.head[0]
        await client.close()
    finally:
        await asyncio.to_thread(worker.close)

    def chain(k: int) -> list[dict[str, Any]]:
        return [e for e in gateway.accepted["audit"] if e["data"].get("chain", 0) == k]

    # a control plane whose welcome does not say it stores worker chains: chain 0 only
    async with running_uplink(enrolled) as (agent, _):
        await await_for(lambda: agent.uplink.state == "connected", what="connected")
        await await_for(lambda: len(chain(0)) >= agent.audit.head[0], what="chain 0")
        await asyncio.sleep(1.5)  # longer than a look at the worker logs
    assert chain(1) == []
    gateway.welcome_extra = {"audit_chains": 64}
    async with running_uplink(enrolled) as (agent, _):
        await await_for(lambda: len(chain(1)) >= length, what="worker 1's chain")
        cursor = await agent.store.read(lambda c: meta.chain_cursor(c, _vault(enrolled), 1))
    sent = chain(1)
    assert [e["id"] for e in sent] == [f"w1.a{s}" for s in range(1, length + 1)]
    assert cursor == (1, length)
    assert made["id"] in {e["data"]["secret_id"] for e in sent}
    assert "only-name" not in json.dumps(gateway.accepted)
    assert all(e["id"].startswith("a") and "chain" not in e["data"] for e in chain(0))


async def test_no_frame_or_request_names_a_secret_or_holds_a_value(
    tmp_path: Path, gateway: FakeGateway, aiohttp_client: Any
) -> None:
    folder = init_agent_dir(tmp_path / "agent")
    key = MetadataKey.generate()
    key.save(folder.path / "metadata.key")
    token = gateway.token()
    await asyncio.to_thread(enroll, folder.path, gateway.url, token)
    gateway.fingerprint = key.fingerprint
    names = ["payments/stripe-live-key", "db/prod/root-password"]
    values = ["sk_live_canary_5f2b9c0e4d", "canary-root-pw-93b1e07a"]
    description = "canary description 7c1d"
    async with running_uplink(folder) as (agent, _):
        client = await aiohttp_client(build_app(agent))
        auth = {"Authorization": f"Bearer {folder.token}"}
        ids = []
        for name, value in zip(names, values, strict=True):
            body = {"name": name, "value": value, "description": description}
            ids.append(
                (await (await client.post("/api/v1/secrets", json=body, headers=auth)).json())["id"]
            )
            quoted = name.replace("/", "%2F")
            assert (await client.get(f"/api/v1/secrets/{quoted}", headers=auth)).status == 200
            assert (
                await client.post(f"/api/v1/secrets/{quoted}/rotate", headers=auth)
            ).status == 200
        assert (await client.get("/api/v1/secrets/no%2Fsuch%2Fname", headers=auth)).status == 404
        await await_for(lambda: agent.uplink.state == "connected", what="connected")
        gateway.send(sealed_command(folder, "resync", {}, key=key))
        await await_for(
            lambda: len(gateway.accepted["audit"]) >= agent.audit.head[0] - 1, what="audit"
        )
        await await_for(lambda: set(ids) <= set(_inventory_ids(gateway)), what="inventory")
        await await_for(
            lambda: any(e["kind"] == "command_result" for e in gateway.accepted["outbox"]),
            what="the resync result",
        )
        await client.close()
    frames = "\n".join(gateway.raw_frames).encode()
    others = [r for r in gateway.requests if r.path != REGISTER_PATH]  # register carries the token
    wire = frames + b"".join(r.path.encode() + r.headers.encode() + r.body for r in others)
    assert token.encode() not in frames
    for canary in [*names, *values, description, "no/such/name", folder.token]:
        raw = canary.encode()
        for form in (raw, raw.hex().encode(), json.dumps(canary).encode()[1:-1]):
            assert form not in wire, canary
    for name in names:
        for part in name.split("/"):
            if len(part) >= 8:  # shorter ones ("db") occur by chance in hex and base64
                assert part.encode() not in wire, part
    secret_targets = [e["data"]["secret_id"] for e in gateway.accepted["audit"]]
    assert set(ids) <= set(secret_targets)
    labels = {
        e["data"]["secret_id"]: e["data"]["label"]
        for e in gateway.accepted["outbox"]
        if e["kind"] == "inventory"
    }
    assert key.open(_vault(folder), ids[0], labels[ids[0]])["name"] == names[0]


async def test_a_command_runs_once_even_when_delivered_again(
    keyed: AgentDir, gateway: FakeGateway
) -> None:
    enrolled = keyed
    async with running_uplink(enrolled) as (agent, _):
        await await_for(lambda: agent.uplink.state == "connected", what="connected")
        made = await agent.secrets.create("rotate/me", "v1")
        command = sealed_command(enrolled, "rotate", {"secret_id": made.id})
        cmd_rot1 = command["id"]
        gateway.commands = [command]  # sent after every welcome, like pending commands
        gateway.drop()
        await await_for(lambda: gateway.connections >= 2, what="a reconnect")

        def results() -> list[dict[str, Any]]:
            return [e["data"] for e in gateway.accepted["outbox"] if e["kind"] == "command_result"]

        await await_for(lambda: results(), what="the result")
        gateway.send(command)
        gateway.drop()
        await await_for(lambda: gateway.connections >= 3, what="another reconnect")
        await await_for(lambda: agent.uplink.state == "connected", what="connected")
        await asyncio.sleep(0.5)
        assert (await agent.secrets.meta(made.id)).version == 2
        assert {json.dumps(r, sort_keys=True) for r in results()} == {
            json.dumps(
                {
                    "command_id": cmd_rot1,
                    "outcome": "ok",
                    "message": "rotated",
                    "secret_id": made.id,
                    "version": 2,
                },
                sort_keys=True,
            )
        }
        ran = [e for e in iter_entries(enrolled.path) if e["actor"] == cmd_rot1]
        assert [(e["op"], e["outcome"], e["target"]) for e in ran] == [
            ("secrets.rotate", "attempt", made.id),
            ("secrets.rotate", "ok", made.id),
        ]
        gateway.commands = []
        bad = [
            sealed_command(enrolled, "rotate", {"secret_id": "sec_" + "a" * 26}),
            sealed_command(enrolled, "rotate", {"secret_id": "x"}),
            sealed_command(enrolled, "explode", {}),
        ]
        for frame in bad:
            gateway.send(frame)
        await await_for(lambda: len({r["command_id"] for r in results()}) == 4, what="results")
    failed = {r["command_id"]: r for r in results() if r["outcome"] == "failed"}
    assert set(failed) == {frame["id"] for frame in bad}
    assert "no such secret" in failed[bad[0]["id"]]["message"]
    assert "refused" in failed[bad[2]["id"]]["message"]  # not a command an operator can seal


async def test_a_command_cut_off_by_a_crash_is_reported_failed_not_rerun(
    enrolled: AgentDir, gateway: FakeGateway
) -> None:
    async with running_uplink(enrolled) as (agent, _):
        await await_for(lambda: agent.uplink.state == "connected", what="connected")
    from agent.settings import load_agent_settings

    agent = Agent.open(load_agent_settings(None, enrolled.path))
    agent.store.write_sync(
        lambda c: c.execute(
            "INSERT INTO kv_commands (id, command, state, received_at) VALUES (?, ?, ?, ?)",
            ("cmd_cut", "rotate", "running", "2026-01-01T00:00:00+00:00"),
        )
    )  # fmt: skip
    agent.close()
    async with running_uplink(enrolled) as (agent, _):
        await await_for(
            lambda: any(e["kind"] == "command_result" for e in gateway.accepted["outbox"]),
            what="the report",
        )
        state = await agent.store.read(
            lambda c: c.execute(
                "SELECT state FROM kv_commands WHERE id = ?", ("cmd_cut",)
            ).scalar_one()
        )
    result = [e["data"] for e in gateway.accepted["outbox"] if e["kind"] == "command_result"]
    assert result == [{"command_id": "cmd_cut", "outcome": "failed", "message": INTERRUPTED}]
    assert state == "done"


async def test_policies_are_kept_and_reported_by_version(
    keyed: AgentDir, gateway: FakeGateway
) -> None:
    body = {"name": "monthly", "selector": {"name_glob": "db/*"},
            "rotator": {"type": "random", "settings": {}}}  # fmt: skip
    intent = sealed_policy(body, revision=3, interval_seconds=30 * 86400)
    gateway.policies = [intent]
    derived = [{"id": intent["id"], "name": "monthly", "version": 3,
                "body": {"selector": body["selector"], "rotator": body["rotator"],
                         "interval_seconds": 30 * 86400, "notice_seconds": 0,
                         "scope": {"all": True}}}]  # fmt: skip
    async with running_uplink(keyed) as (agent, link):
        expected = hashlib.sha256(
            json.dumps(derived, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        await await_for(lambda: link.policies_version == expected, what="the policies")
        held = await agent.store.read(lambda c: meta.get(c, meta.POLICIES))
        assert held == {"version": expected, "policies": derived}
        await await_for(
            lambda: gateway.of_type("heartbeat")[-1]["health"]["policies_version"] == expected,
            what="a heartbeat with them",
        )


async def test_failure_counters_raise_rate_limited_alerts(
    enrolled: AgentDir, gateway: FakeGateway
) -> None:
    async with running_uplink(enrolled) as (agent, link):
        await await_for(lambda: agent.uplink.state == "connected", what="connected")
        agent.metrics.integrity_failures += 1
        agent.metrics.audit_failures += 2

        def alerts() -> list[dict[str, Any]]:
            return [e["data"] for e in gateway.accepted["outbox"] if e["kind"] == "alert"]

        await await_for(lambda: len(alerts()) == 2, timeout=10, what="two alerts")
        agent.metrics.integrity_failures += 1
        await asyncio.sleep(2.5)
        assert len(alerts()) == 2  # the same kind again within the window: no new alert
        assert {a["kind"]: a["message"] for a in alerts()} == {
            "integrity_failure": ALERT_TEXTS["integrity_failure"],
            "audit_failure": ALERT_TEXTS["audit_failure"],
        }
        assert link.health_status() == "degraded"


async def test_revocation_stops_dialling_and_the_local_api_keeps_serving(
    enrolled: AgentDir, gateway: FakeGateway
) -> None:
    async with running_uplink(enrolled) as (agent, _):
        await await_for(lambda: agent.uplink.state == "connected", what="connected")
        gateway.revoke(_vault(enrolled))
        await await_for(lambda: agent.uplink.state == "revoked", what="revoked")
        dials = len([r for r in gateway.requests if r.path == UPLINK_PATH])
        await asyncio.sleep(1.0)
        assert len([r for r in gateway.requests if r.path == UPLINK_PATH]) == dials
        assert "revoked" in (agent.uplink.last_error or "")
        await agent.secrets.create("still/served", "yes")
    async with running_uplink(enrolled) as (agent, _):  # the upgrade itself is refused (403)
        await await_for(lambda: agent.uplink.state == "revoked", what="revoked at the upgrade")
        await asyncio.sleep(0.5)
    assert len([r for r in gateway.requests if r.path == UPLINK_PATH]) == dials + 1


async def test_a_metadata_key_mismatch_stops_dialling(
    enrolled: AgentDir, gateway: FakeGateway
) -> None:
    gateway.fingerprint = "sha256:" + "0" * 64
    async with running_uplink(enrolled) as (agent, _):
        await await_for(lambda: agent.uplink.state == "refused", what="refused")
        await asyncio.sleep(0.5)
        assert gateway.connections == 1
        assert "metadata key" in (agent.uplink.last_error or "")


async def test_an_expired_certificate_means_must_reenroll_without_dialling(
    enrolled: AgentDir, gateway: FakeGateway
) -> None:
    def later() -> datetime:
        return datetime.now(UTC) + timedelta(days=2)

    async with running_uplink(enrolled, clock=later) as (agent, _):
        await await_for(lambda: agent.uplink.state == "must_reenroll", what="must_reenroll")
        await asyncio.sleep(0.3)
        assert "expired" in (agent.uplink.last_error or "")
        assert "keyvault agent enroll --force" in (agent.uplink.last_error or "")
        assert [r for r in gateway.requests if r.path == UPLINK_PATH] == []
        await asyncio.to_thread(
            enroll, enrolled.path, gateway.url, gateway.token(), force=True
        )  # re-enrolling brings it back (here the clock still says expired: stays stopped)
        await await_for(lambda: agent.uplink.vault_id == _vault(enrolled), what="the new id")


async def test_renewal_swaps_key_and_chain_for_the_next_connection(
    tmp_path: Path, gateway: FakeGateway
) -> None:
    gateway.cert_valid = timedelta(minutes=30)
    folder = init_agent_dir(tmp_path / "agent")
    await asyncio.to_thread(enroll_dir, folder, gateway)
    up = folder.path / "uplink"
    old_key, old_chain = (up / "client.key").read_bytes(), (up / "client.crt").read_bytes()

    def later() -> datetime:  # 25 of 30 minutes gone: past two thirds, not expired
        return datetime.now(UTC) + timedelta(minutes=25)

    async with running_uplink(folder, clock=later):
        await await_for(lambda: gateway.of_type("renew"), what="a renew frame")
        await await_for(lambda: (up / "client.crt").read_bytes() != old_chain, what="the swap")
        new_key, new_chain = (up / "client.key").read_bytes(), (up / "client.crt").read_bytes()
        assert new_key != old_key and not (up / "renew.key").exists()
        chain = x509.load_pem_x509_certificates(new_chain)
        assert same_key(chain[0], new_key) and len(chain) == 2
        assert len(gateway.of_type("renew")) == 1  # once per connection
        gateway.drop()
        await await_for(lambda: len(gateway.peer_serials) >= 2, what="a reconnect")
    assert gateway.peer_serials[1] == chain[0].serial_number
    assert gateway.peer_serials[0] != chain[0].serial_number


async def test_a_refused_renewal_keeps_the_old_identity(
    enrolled: AgentDir, gateway: FakeGateway
) -> None:
    gateway.renewal_refused = True
    up = enrolled.path / "uplink"
    chain = (up / "client.crt").read_bytes()

    def later() -> datetime:
        return datetime.now(UTC) + timedelta(hours=20)

    async with running_uplink(enrolled, clock=later) as (agent, _):
        await await_for(lambda: gateway.of_type("renew"), what="a renew frame")
        await await_for(lambda: not (up / "renew.key").exists(), what="the key discarded")
        assert agent.uplink.state == "connected"
    assert (up / "client.crt").read_bytes() == chain


async def test_an_unreachable_gateway_backs_off_and_stop_is_prompt(
    enrolled: AgentDir, gateway: FakeGateway
) -> None:
    state = json.loads((enrolled.path / "uplink" / "state.json").read_text())
    state["control_plane_url"] = "https://127.0.0.1:1"
    (enrolled.path / "uplink" / "state.json").write_text(json.dumps(state))
    async with running_uplink(enrolled) as (agent, link):
        await await_for(lambda: agent.uplink.state == "backing_off", what="backing off")
        assert "cannot reach the control plane" in (agent.uplink.last_error or "")
        await await_for(lambda: link.backoff.attempt >= 3, what="several attempts")
        assert link.backoff.bound() <= 0.2
        loop = asyncio.get_running_loop()
        started = loop.time()
        await link.stop(5)
        assert loop.time() - started < 1.0


async def test_stop_closes_a_live_socket_promptly(enrolled: AgentDir, gateway: FakeGateway) -> None:
    async with running_uplink(enrolled) as (agent, link):
        await await_for(lambda: agent.uplink.state == "connected", what="connected")
        loop = asyncio.get_running_loop()
        started = loop.time()
        await link.stop(5)
        assert loop.time() - started < 2.0
        await await_for(lambda: not gateway.sessions, what="the fake to see the close")


async def test_garbage_from_the_control_plane_costs_a_reconnect_not_the_agent(
    enrolled: AgentDir, gateway: FakeGateway
) -> None:
    async with running_uplink(enrolled) as (agent, _):
        await await_for(lambda: agent.uplink.state == "connected", what="connected")
        gateway.send({"type": "nonsense"})
        await await_for(lambda: gateway.connections >= 2, what="a reconnect")
        await await_for(lambda: agent.uplink.state == "connected", what="connected again")
        await agent.secrets.create("fine/still", "v")


async def test_the_trace_file_records_both_directions(
    enrolled: AgentDir, gateway: FakeGateway, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.jsonl"
    async with running_uplink(enrolled, trace_file=trace) as (agent, _):
        await agent.secrets.create("traced/one", "v")
        await await_for(lambda: gateway.accepted["outbox"], what="events")
    lines = [json.loads(line) for line in trace.read_text().splitlines()]
    assert {line["dir"] for line in lines} == {"in", "out"}
    assert lines[0]["frame"]["type"] == "hello"
    assert b'"type":"events"' in trace.read_bytes()


def test_uplink_repr_and_health_when_not_enrolled(tmp_path: Path) -> None:
    from agent.settings import load_agent_settings

    folder = init_agent_dir(tmp_path / "agent")
    agent = Agent.open(load_agent_settings(None, folder.path))
    try:
        link = Uplink(agent)
        link.prepare()
        assert "not_enrolled" in repr(link)
        assert agent.uplink.to_json(agent.audit.head[0]) == {
            "state": "not_enrolled", "vault_id": None, "control_plane_url": None,
            "last_connected_at": None, "last_error": None, "outbox_depth": 0,
            "certificate_not_after": None,
        }  # fmt: skip
    finally:
        agent.close()


async def test_a_sealed_deletion_removes_a_policy_and_a_replay_cannot_bring_it_back(
    keyed: AgentDir, gateway: FakeGateway
) -> None:
    body = {"name": "weekly", "selector": {"name_glob": "db/*"},
            "rotator": {"type": "random", "settings": {}}}  # fmt: skip
    first = sealed_policy(body, interval_seconds=7 * 86400)
    gone = intents.IntentKeys(INTENT_KEY).seal(intents.delete_header(first["id"], 2), {})
    gateway.policies = [first]
    async with running_uplink(keyed) as (agent, link):

        async def held() -> list[Any]:
            doc = await agent.store.read(lambda c: meta.get(c, meta.POLICIES))
            return list((doc or {}).get("policies") or [])

        await await_for(lambda: link.policies_version != policies_version([]), what="held")
        assert [p["id"] for p in await held()] == [first["id"]]
        gateway.send({"type": "policies", "policies": [gone]})
        await await_for(lambda: link.policies_version == policies_version([]), what="deleted")
        gateway.send({"type": "policies", "policies": [first]})  # revision 1 again: a replay
        await asyncio.sleep(0.5)
        assert await held() == []
        await await_for(
            lambda: any("replay" in e["data"]["message"] for e in gateway.accepted["outbox"]
                        if e["kind"] == "alert"),
            what="the replay alert",
        )  # fmt: skip


async def test_a_flood_of_frames_ends_the_connection_and_is_alerted(
    enrolled: AgentDir, gateway: FakeGateway
) -> None:
    async with running_uplink(enrolled) as (agent, _):
        await await_for(lambda: agent.uplink.state == "connected", what="connected")
        before = gateway.connections
        flood = [{"type": "ack", "stream": "outbox", "upto": 0}] * (FRAME_BURST + 200)

        async def go() -> None:
            for s in list(gateway.sessions):
                for frame in flood:
                    await gateway._send(s, frame)

        await asyncio.to_thread(gateway.call, go())
        await await_for(lambda: gateway.connections > before, what="a new connection")
        await await_for(
            lambda: any("frames a second" in e["data"]["message"]
                        for e in gateway.accepted["outbox"] if e["kind"] == "alert"),
            what="the flood alert",
        )  # fmt: skip
        assert agent.uplink.state in ("connected", "backing_off", "connecting")
