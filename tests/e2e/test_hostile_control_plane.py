"""End to end, issue 14: the control plane as an adversary (``docs/intents.md``).

A production-mode control plane (PostgreSQL + Redis) relays to a real agent process what an
attacker who owns its database and its Redis writes there: policies and commands created,
altered, replayed and deleted behind the operators' backs, a rotator retargeted to the
``postgres`` role and to an undeclared hook (sealed by an operator, but beyond what the agent's
own ``agent.yaml`` allows), and forged frames published on the uplink route. The agent refuses
every one, says so upstream (``intent_refused`` alerts, seen in its uplink trace), changes no
secret, runs no hook, and keeps serving; the operators' own sealed policy keeps working.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from common import intents
from common.metadata_key import MetadataKey
from tests.e2e.conftest import REDIS_URL, ControlPlane, FleetAgent, wait_for
from tests.e2e.test_rotation import (
    KEY,
    SEAL,
    _configure,
    _create,
    _create_policy,
    _governed,
    _inventory,
    _item,
    _keyed_agent,
    _served,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def cp_db(control_plane: ControlPlane) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the control plane's own database (the attacker's)."""
    with psycopg.connect(
        f"postgresql://postgres@127.0.0.1:5432/{control_plane.database}", autocommit=True
    ) as conn:
        yield conn


def _alerts_sent(trace: Path) -> list[str]:
    """The messages of every ``alert`` event the agent sent upstream."""
    out = []
    for line in trace.read_text().splitlines():
        doc = json.loads(line)
        frame = doc["frame"]
        if doc["dir"] == "out" and isinstance(frame, dict) and frame.get("type") == "events":
            out += [e["data"]["message"] for e in frame["batch"] if e["kind"] == "alert"]
    return out


def _refused(trace: Path, *words: str) -> str:
    """Wait for an ``intent_refused`` alert holding every word; returns it."""
    return str(
        wait_for(
            lambda: next((m for m in _alerts_sent(trace) if all(w in m for w in words)), None),
            30,
            f"an alert about {words}",
        )
    )


def _push(cp: ControlPlane) -> None:
    """Make the control plane send its policy list again (any policy change does)."""
    fields = {"name": f"nudge {time.monotonic()}", "selector": {"name_glob": "none/*"},
              "interval_seconds": 86400, "notice_seconds": 0,
              "rotator": {"type": "random", "settings": {}}, "scope": {"all": True}}  # fmt: skip
    with cp.api() as c:
        c.post("/policies", json=SEAL.policy(fields)).raise_for_status()


def _insert_policy(db: psycopg.Connection[Any], org_id: str, intent: Any, pid: str) -> None:
    db.execute(
        "INSERT INTO cp_policies (id, org_id, name, body, version, created_at, updated_at,"
        " intent) VALUES (%s, %s, %s, %s, 1, now(), now(), %s)",
        (
            pid,
            org_id,
            pid,
            json.dumps({"interval_seconds": 60, "notice_seconds": 0, "scope": {"all": True}}),
            None if intent is None else json.dumps(intent),
        ),
    )


def test_a_hostile_control_plane_cannot_make_the_agent_act(
    control_plane: ControlPlane,
    make_agent: Any,
    tmp_path: Path,
    cp_db: psycopg.Connection[Any],
    redis_prefix: str,
) -> None:
    cp, db = control_plane, cp_db
    ran = tmp_path / "hook-ran"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ncat > /dev/null\ntouch {ran}\n")
    hook.chmod(0o755)
    dsn = tmp_path / "main.dsn"
    dsn.write_text("host=127.0.0.1 port=1 user=postgres")
    agent: FleetAgent = _keyed_agent(cp, make_agent, tmp_path, "target")
    _configure(
        agent,
        postgres={"main": {"dsn_file": str(dsn), "roles": ["app_user"]}},
        commands={"ok": {"argv": [str(hook)]}},
        protected_names=["prod/root/**"],
    )
    vault_id = agent.vault_id
    org_id = db.execute("SELECT org_id FROM cp_vaults WHERE id = %s", (vault_id,)).fetchone()
    assert org_id is not None
    org_id = org_id[0]
    legit = _create_policy(cp, vault_id, "svc/*", {"type": "random", "settings": {}})
    trace = tmp_path / "trace.jsonl"
    agent.start(env={"KEYVAULT_UPLINK__TRACE_FILE": str(trace)})
    a = _create(agent, "svc/a", "value-a")
    root = _create(agent, "prod/root/pw", "root-pw")
    _governed(cp, vault_id, a, legit)
    served = {a: _served(agent, a), root: _served(agent, root)}

    # 1. a policy created in the database: plaintext, and sealed with another key
    _insert_policy(db, org_id, None, "pol_" + "p" * 26)
    other = intents.IntentKeys(MetadataKey(bytes(32)))
    forged = other.seal(
        intents.policy_header("pol_" + "q" * 26, 1, interval_seconds=60, notice_seconds=0,
                              vault_ids=None),
        {"name": "probe", "selector": {"name_glob": "**"}, "rotator": {"type": "random"}},
    )  # fmt: skip
    _insert_policy(db, org_id, forged, forged["id"])
    _push(cp)
    _refused(trace, "a policy did not verify")

    # 2. the operators' policy altered in place (interval in its clear header) and replayed
    row = db.execute("SELECT intent FROM cp_policies WHERE id = %s", (legit,)).fetchone()
    assert row is not None
    first = json.loads(row[0])
    db.execute("UPDATE cp_policies SET intent = %s WHERE id = %s",
               (json.dumps({**first, "interval_seconds": 60}), legit))  # fmt: skip
    _push(cp)
    newer = SEAL.policy({"name": "svc", "selector": {"name_glob": "svc/*"},
                         "interval_seconds": 7 * 86400, "notice_seconds": 0,
                         "rotator": {"type": "random", "settings": {}},
                         "scope": {"vault_ids": [vault_id]}}, policy_id=legit, revision=2)  # fmt: skip
    with cp.api() as c:
        c.put(f"/policies/{legit}", json=newer).raise_for_status()
    db.execute(
        "UPDATE cp_policies SET intent = %s, version = 3 WHERE id = %s", (json.dumps(first), legit)
    )  # fmt: skip
    _push(cp)
    _refused(trace, legit, "replay")

    # 3. the policy deleted from the database: kept, and said
    db.execute("DELETE FROM cp_policies WHERE id = %s", (legit,))
    _push(cp)
    _refused(trace, legit, "without a sealed deletion")

    # 4. rotators retargeted beyond agent.yaml: the postgres role, an undeclared hook
    for rotator in ({"type": "postgres", "settings": {"connection": "main", "role": "postgres"}},
                    {"type": "command", "settings": {"command": "evil"}}):  # fmt: skip
        _create_policy(cp, vault_id, "svc/*", rotator)
    _refused(trace, "roles list")
    _refused(trace, "command hook agent.yaml does not define")

    # 5. commands: plaintext, for another vault, expired, a protected secret, a replay
    def command_row(frame_id: str, intent: Any, command: str = "rotate") -> None:
        db.execute(
            "INSERT INTO cp_commands (id, org_id, vault_id, command, args, state, created_by,"
            " created_at, updated_at, intent) VALUES (%s, %s, %s, %s, %s, 'pending', 'usr_x',"
            " now(), now(), %s)",
            (frame_id, org_id, vault_id, command, json.dumps({"secret_id": a}),
             None if intent is None else json.dumps(intent)),
        )  # fmt: skip

    keys = intents.IntentKeys(KEY)
    elsewhere = keys.seal(intents.command_header("vlt_other"),
                          {"command": "rotate", "args": {"secret_id": a}})  # fmt: skip
    from datetime import UTC, datetime, timedelta

    stale = keys.seal(
        intents.command_header(vault_id, now=datetime.now(UTC) - timedelta(days=2)),
        {"command": "rotate", "args": {"secret_id": a}},
    )
    command_row(intents.new_id("cmd"), None)
    command_row(elsewhere["id"], elsewhere, "sealed")
    command_row(stale["id"], stale, "sealed")
    with cp.api() as c:
        r = c.post(f"/vaults/{vault_id}/commands",
                   json=SEAL.command(vault_id, "rotate", {"secret_id": root}))  # fmt: skip
        assert r.status_code == 202, r.text
        legit_cmd = r.json()["id"]

    def results() -> dict[str, str]:
        rows = db.execute("SELECT id, state, result FROM cp_commands").fetchall()
        return {r[0]: f"{r[1]}: {r[2]}" for r in rows}

    # the connected agent gets the operator's command at once: let it finish (refused) before
    # the restart below, or the stop may land while it runs ("stopped while running")
    wait_for(lambda: results().get(legit_cmd, "").startswith("failed"), 30, "command refused")
    # forged frames straight on Redis: a command and a policy list (the gateway drops the
    # latter), each relayed by whichever replica holds the socket
    bus = redis.Redis.from_url(REDIS_URL)
    for frame in ({"type": "command", "id": "cmd_forged", "command": "rotate",
                   "args": {"secret_id": a}},
                  {"type": "policies", "policies": [forged]}):  # fmt: skip
        bus.publish(f"{redis_prefix}:uplink", json.dumps({"vault_id": vault_id, "frame": frame}))
    bus.close()
    agent.stop()  # pending commands are sent again on connect
    agent.start(env={"KEYVAULT_UPLINK__TRACE_FILE": str(trace)})
    _refused(trace, "is meant for another vault")
    _refused(trace, "expired")

    wait_for(lambda: all(v.startswith("failed") for v in results().values()), 30, "all failed")
    assert any("protected" in v for v in results().values()), results()

    # nothing changed, nothing ran, the agent serves, the operators' policy still governs
    time.sleep(1.0)
    assert {sid: _served(agent, sid) for sid in served} == served
    assert not ran.exists()
    assert agent.health()["status"] in ("ok", "healthy", "degraded")
    assert _item(cp, vault_id, a)["policy_id"] == legit  # the operators' policy still governs


def test_probe_policies_recover_no_name(
    control_plane: ControlPlane,
    make_agent: Any,
    tmp_path: Path,
    cp_db: psycopg.Connection[Any],
) -> None:
    """Issue 14's name-recovery attack: the control plane creates probe policies (name_glob
    prefixes, label values) and watches which secrets a policy governs in the inventory. Against
    a vault of 50 secrets it recovers 0 names: no probe it can make is ever applied."""
    cp, db = control_plane, cp_db
    agent: FleetAgent = _keyed_agent(cp, make_agent, tmp_path, "probed")
    _configure(agent)
    vault_id = agent.vault_id
    row = db.execute("SELECT org_id FROM cp_vaults WHERE id = %s", (vault_id,)).fetchone()
    assert row is not None
    org_id = row[0]
    trace = tmp_path / "trace.jsonl"
    agent.start(env={"KEYVAULT_UPLINK__TRACE_FILE": str(trace)})
    assert agent.proc is not None
    names = [f"{team}/{kind}/secret-{i:02d}" for i, (team, kind) in enumerate(
        (t, k) for t in ("pay", "web", "ops", "data", "core") for k in
        ("db", "api", "tls", "ssh", "app", "jwt", "s3", "mq", "ldap", "smtp"))]  # fmt: skip
    with agent.proc.client() as local:
        ids = [local.create(n, value=f"v-{n}", labels={"team": n.split("/")[0]})["id"]
               for n in names]  # fmt: skip
    assert len(ids) == 50
    wait_for(lambda: len(_inventory(cp, vault_id)) == 50, 30, "the inventory")

    # the probes: one prefix per first letter and per team, one per label value, plaintext and
    # sealed with a key the control plane made itself (it has no other)
    own = intents.IntentKeys(MetadataKey.generate())
    probes: dict[str, str] = {}
    selectors = [{"name_glob": f"{c}**"} for c in "abcdefghijklmnopqrstuvwxyz"] + [
        {"labels": {"team": t}} for t in ("pay", "web", "ops", "data", "core")
    ]
    for n, selector in enumerate(selectors):
        body = {"name": f"probe {n}", "selector": selector,
                "rotator": {"type": "random", "settings": {}}}  # fmt: skip
        pid = intents.new_id("pol")
        if n % 2:
            header = intents.policy_header(pid, 1, interval_seconds=10 * 365 * 86400,
                                           notice_seconds=0, vault_ids=None)  # fmt: skip
            _insert_policy(db, org_id, own.seal(header, body), pid)
        else:
            _insert_policy(db, org_id, None, pid)
            db.execute("UPDATE cp_policies SET body = %s WHERE id = %s",
                       (json.dumps({**body, "interval_seconds": 3650 * 86400,
                                    "notice_seconds": 0, "scope": {"all": True}}), pid))  # fmt: skip
        probes[pid] = str(selector)
    _push(cp)
    _refused(trace, "a policy did not verify")
    time.sleep(2.0)  # scheduler passes and inventory updates had their chance
    governed = {i["secret_id"]: i["policy_id"] for i in _inventory(cp, vault_id).values()}
    recovered = {sid for sid, pid in governed.items() if pid in probes}
    assert len(governed) == 50 and recovered == set(), recovered  # 0 names recovered
    dump = json.dumps(db.execute("SELECT * FROM cp_inventory").fetchall(), default=str)
    assert not any(n in dump for n in names)
