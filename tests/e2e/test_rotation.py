"""End to end, issue 5: policy-driven rotation with real processes (``docs/rotation.md``).

A production-mode control plane (PostgreSQL + Redis) and an enrolled agent process whose
``agent.yaml`` defines PostgreSQL connections and command hooks. Policies are made through the
control plane's API, scoped to the vault; rotations are triggered by operator ``rotate``
commands (and by the scheduler for an overdue secret). The ``postgres`` rotator works against a
throwaway cluster that checks passwords (``tests/pgscram.py``).

Every failure keeps the old value (served by the agent, and for PostgreSQL still the password
that logs in), raises ``rotation_failed`` once however often it fails again, and the next
successful rotation resolves it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from apps.core.intents import IntentMaker
from common.metadata_key import MetadataKey
from tests.e2e.conftest import ControlPlane, FleetAgent, wait_for
from tests.pgscram import PgServer, free_port, private_server

NO_LOGIN_DB = "kv_no_login"  # pg_hba.conf may reject logins to it (verification failure)
KEY = MetadataKey(bytes(range(32)))  # the organisation's metadata key: operators seal with it
SEAL = IntentMaker(lambda: KEY)


# ---------------------------------------------------------------- helpers


def _keyed_agent(cp: ControlPlane, make_agent: Any, tmp_path: Path, name: str) -> FleetAgent:
    """An enrolled agent holding the organisation's metadata key (registered by fingerprint)."""
    key_file = tmp_path / "org.key"
    if not key_file.exists():
        KEY.save(key_file)
        with cp.api() as c:
            c.put("/org/metadata-key", json={"fingerprint": KEY.fingerprint}).raise_for_status()
    return make_agent(cp, name, metadata_key=key_file)  # type: ignore[no-any-return]


def _configure(agent: FleetAgent, **rotation: Any) -> None:
    """Put a ``rotation`` section into the (not yet started) agent's ``agent.yaml``."""
    path = agent.dir.path / "agent.yaml"
    config = yaml.safe_load(path.read_text())
    config["rotation"] = {
        "scan_interval_seconds": 0.3,
        "retry_base_seconds": 3600,  # retries are operator commands here: deterministic
        "jitter_fraction": 0,
        **rotation,
    }
    path.write_text(yaml.safe_dump(config))


def _create_policy(
    cp: ControlPlane,
    vault_id: str,
    glob: str,
    rotator: dict[str, Any],
    *,
    interval: int = 86400,
    notice: int = 0,
) -> str:
    """A policy over one name glob, scoped to one vault, sealed as an operator app seals it and
    made through the API; its id."""
    fields = {
        "name": f"rotate {glob} in {vault_id}",
        "selector": {"name_glob": glob},
        "interval_seconds": interval,
        "notice_seconds": notice,
        "rotator": rotator,
        "scope": {"vault_ids": [vault_id]},
    }
    with cp.api() as c:
        r = c.post("/policies", json=SEAL.policy(fields))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def _postgres_policy(cp: ControlPlane, vault_id: str, glob: str, connection: str, role: str) -> str:
    """A ``postgres`` policy naming an agent-side connection (a name, never a credential)."""
    settings = {"connection": connection, "role": role}
    return _create_policy(cp, vault_id, glob, {"type": "postgres", "settings": settings})


def _inventory(cp: ControlPlane, vault_id: str) -> dict[str, dict[str, Any]]:
    with cp.api() as c:
        r = c.get(f"/vaults/{vault_id}/inventory", params={"limit": 500})
        r.raise_for_status()
        return {item["secret_id"]: item for item in r.json()["items"]}


def _item(cp: ControlPlane, vault_id: str, secret_id: str) -> dict[str, Any]:
    return _inventory(cp, vault_id).get(secret_id) or {}


def _governed(cp: ControlPlane, vault_id: str, secret_id: str, policy_id: str) -> dict[str, Any]:
    """Wait until the inventory shows the secret under the policy (the agent has it)."""
    return dict(
        wait_for(
            lambda: (i := _item(cp, vault_id, secret_id)).get("policy_id") == policy_id and i,
            30,
            f"{secret_id} governed by {policy_id} in the inventory",
        )
    )


def _alerts(cp: ControlPlane, kind: str, vault_id: str, secret_id: str) -> list[dict[str, Any]]:
    """Every alert (any state) of one kind for one secret."""
    key = f"{kind}:{vault_id}:{secret_id}"
    with cp.api() as c:
        r = c.get("/alerts", params={"limit": 500})
        r.raise_for_status()
        return [a for a in r.json()["items"] if a["key"] == key]


def _rotate(cp: ControlPlane, vault_id: str, secret_id: str, *, wait: bool = True) -> Any:
    """An operator ``rotate`` command; with ``wait``, its finished document, else its id."""
    with cp.api() as c:
        r = c.post(
            f"/vaults/{vault_id}/commands",
            json=SEAL.command(vault_id, "rotate", {"secret_id": secret_id}),
        )
        assert r.status_code == 202, r.text
        command_id = r.json()["id"]
    return _command_done(cp, command_id) if wait else command_id


def _command_done(cp: ControlPlane, command_id: str, timeout: float = 30) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        with cp.api() as c:
            doc = c.get(f"/commands/{command_id}").json()
        return dict(doc) if doc["state"] in ("succeeded", "failed") else None

    return dict(wait_for(finished, timeout, f"command {command_id} to finish"))


def _served(agent: FleetAgent, secret_id: str) -> tuple[str, int]:
    """(value, version) the agent serves for the secret."""
    assert agent.proc is not None
    with agent.proc.client() as local:
        doc = local.get(secret_id)
    return doc["value"], doc["version"]


def _create(agent: FleetAgent, name: str, value: str) -> str:
    assert agent.proc is not None
    with agent.proc.client() as local:
        return str(local.create(name, value=value)["id"])


def _fails_then_recovers(
    cp: ControlPlane,
    agent: FleetAgent,
    secret_id: str,
    reason: str,
    old: str,
    still_old: Any = lambda: True,
) -> None:
    """Two rotations fail with ``reason``: the old value stays (``still_old()`` checks the
    outside world), exactly one open ``rotation_failed`` alert. The caller then fixes the cause."""
    vault_id = agent.vault_id
    first = _rotate(cp, vault_id, secret_id)
    assert first["state"] == "failed" and reason in json.dumps(first["result"]), first
    assert _served(agent, secret_id) == (old, 1)
    assert still_old()
    [alert] = wait_for(lambda: _alerts(cp, "rotation_failed", vault_id, secret_id), 30, "alert")
    assert alert["state"] == "open" and reason in alert["message"], alert
    assert old not in json.dumps(alert)
    item = wait_for(
        lambda: (i := _item(cp, vault_id, secret_id))["rotation"]["state"] == "failed" and i,
        30,
        "the failure in the inventory",
    )
    assert item["version"] == 1

    again = _rotate(cp, vault_id, secret_id)  # a retry that fails again
    assert again["state"] == "failed" and reason in json.dumps(again["result"]), again
    wait_for(  # the second failure reached the control plane (the retry time moved on)
        lambda: (
            _item(cp, vault_id, secret_id)["rotation"]["next_due_at"]
            != item["rotation"]["next_due_at"]
        ),
        30,
        "the second failure in the inventory",
    )
    assert _served(agent, secret_id) == (old, 1)
    assert still_old()
    alerts = _alerts(cp, "rotation_failed", vault_id, secret_id)
    assert [(a["id"], a["state"]) for a in alerts] == [(alert["id"], "open")]


def _recovers(cp: ControlPlane, agent: FleetAgent, secret_id: str, old: str) -> str:
    """The next rotation succeeds and resolves the alert; returns the new value."""
    vault_id = agent.vault_id
    done = _rotate(cp, vault_id, secret_id)
    assert done["state"] == "succeeded", done
    new, version = _served(agent, secret_id)
    assert new != old and version == 2
    wait_for(
        lambda: (
            [a["state"] for a in _alerts(cp, "rotation_failed", vault_id, secret_id)]
            == ["resolved"]
        ),
        30,
        "the rotation_failed alert resolved",
    )
    item = _item(cp, vault_id, secret_id)
    assert item["version"] == 2 and item["rotation"]["state"] == "ok", item
    return new


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def scram_pg() -> Iterator[PgServer]:
    """A private cluster that checks passwords, with a database pg_hba.conf can lock."""
    with private_server() as server:
        with server.admin() as conn:
            conn.execute(f"CREATE DATABASE {NO_LOGIN_DB}")
        yield server


def _hba_reject(server: PgServer, reject: bool) -> None:
    """Reject (or stop rejecting) every login to ``NO_LOGIN_DB`` in pg_hba.conf; reload."""
    with server.admin() as conn:
        row = conn.execute("SHOW hba_file").fetchone()
        assert row is not None
        hba = Path(row[0])
        rule = f"host {NO_LOGIN_DB} all 127.0.0.1/32 reject\n"
        text = hba.read_text().replace(rule, "")
        hba.write_text(rule + text if reject else text)  # first match wins
        conn.execute("SELECT pg_reload_conf()")

    def admitted() -> bool:
        try:
            psycopg.connect(server.dsn(dbname=NO_LOGIN_DB), connect_timeout=5).close()
        except psycopg.OperationalError as exc:
            assert "pg_hba.conf rejects" in str(exc)
            return False
        return True

    wait_for(lambda: admitted() != reject, 10, "pg_hba.conf reloaded")  # asynchronous


def test_postgres_rotation_through_the_control_plane(
    control_plane: ControlPlane, make_agent: Any, scram_pg: PgServer, tmp_path: Path
) -> None:
    cp, pg = control_plane, scram_pg
    dsn_file = tmp_path / "main.dsn"
    dsn_file.write_text(pg.admin_dsn)
    dsn_file.chmod(0o600)
    agent: FleetAgent = _keyed_agent(cp, make_agent, tmp_path, "pg")
    cases = {
        "ok": ("main", "pw-ok-0ld'\" x"),
        "down": ("main", "pw-down-0ld"),
        "verify": ("locked", "pw-verify-0ld"),
    }
    roles = {case: pg.create_role(old) for case, (_, old) in cases.items()}
    allowed = sorted(roles.values())  # agent.yaml lists the roles each connection may rotate
    _configure(
        agent,
        postgres={
            "main": {"dsn_file": str(dsn_file), "roles": allowed},
            "locked": {"dsn_file": str(dsn_file), "dbname": NO_LOGIN_DB, "roles": allowed},
        },
    )
    vault_id = agent.vault_id
    policies = {
        case: _postgres_policy(cp, vault_id, f"pg/{case}", connection, roles[case])
        for case, (connection, _) in cases.items()
    }
    agent.start()
    ids = {case: _create(agent, f"pg/{case}", old) for case, (_, old) in cases.items()}
    for case, secret_id in ids.items():
        _governed(cp, vault_id, secret_id, policies[case])

    # 1. success: the new password logs in, the old one does not; the inventory has it
    role, old = roles["ok"], cases["ok"][1]
    done = _rotate(cp, vault_id, ids["ok"])
    assert done["state"] == "succeeded", done
    new, version = _served(agent, ids["ok"])
    assert version == 2 and new != old
    assert pg.can_login(role, new) and not pg.can_login(role, old)
    item = wait_for(
        lambda: (i := _item(cp, vault_id, ids["ok"]))["version"] == 2 and i, 30, "version 2"
    )
    assert item["rotation"]["state"] == "ok" and item["policy_id"] == policies["ok"]
    assert not _alerts(cp, "rotation_failed", vault_id, ids["ok"])
    assert new not in cp.logs().decode(errors="replace")

    # 2a. the database is down (the connection's DSN points at a closed port), then back
    role, old = roles["down"], cases["down"][1]
    dsn_file.write_text(pg.dsn(port=free_port()))  # read at each use: no restart
    _fails_then_recovers(
        cp, agent, ids["down"], "database_unreachable", old, lambda: pg.can_login(role, old)
    )
    dsn_file.write_text(pg.admin_dsn)
    new = _recovers(cp, agent, ids["down"], old)
    assert pg.can_login(role, new) and not pg.can_login(role, old)

    # 2b. verification fails (pg_hba.conf rejects the verifying login): reverted, then fixed
    role, old = roles["verify"], cases["verify"][1]
    _hba_reject(pg, True)
    try:
        _fails_then_recovers(
            cp,
            agent,
            ids["verify"],
            "verification_failed",
            old,
            lambda: pg.can_login(role, old),
        )
    finally:
        _hba_reject(pg, False)
    new = _recovers(cp, agent, ids["verify"], old)
    assert pg.can_login(role, new, NO_LOGIN_DB) and not pg.can_login(role, old)


def test_api_accepts_a_postgres_policy(control_plane: ControlPlane) -> None:
    """docs/rotation.md: a postgres rotator's ``connection`` is a name, not a credential."""
    body = {
        "name": "db",
        "selector": {"name_glob": "db/*"},
        "interval_seconds": 3600,
        "rotator": {"type": "postgres", "settings": {"connection": "main", "role": "app"}},
    }
    with control_plane.api() as c:
        r = c.post("/policies", json=body)
        assert r.status_code == 201, r.text
        settings = {"connection": "main", "dsn": "postgresql://app:pw@db/app"}
        refused = c.post(
            "/policies", json={**body, "rotator": {"type": "postgres", "settings": settings}}
        )
        assert refused.status_code == 400 and "looks like a credential" in refused.text


# ---------------------------------------------------------------- command hooks


def _hook(tmp_path: Path, name: str, body: str) -> str:
    """A hook script: ``$v`` is the new value read from stdin; ``$W`` the world's copy of it."""
    world = tmp_path / "world"
    world.mkdir(exist_ok=True)
    path = tmp_path / f"{name}.sh"
    path.write_text(f'#!/bin/sh\nv=$(cat)\nW="{world}/$KEYVAULT_SECRET_ID"\n{body}\n')
    path.chmod(0o755)
    return str(path)


def test_command_failures_keep_the_old_value(
    control_plane: ControlPlane, make_agent: Any, tmp_path: Path
) -> None:
    cp = control_plane
    fixed = tmp_path / "fixed"  # present: the hooks work
    publish = 'printf %s "$v" > "$W"'
    agent: FleetAgent = _keyed_agent(cp, make_agent, tmp_path, "hooks")
    _configure(
        agent,
        commands={
            "exits": {"argv": [_hook(tmp_path, "exits", f"[ -e {fixed} ] || exit 3\n{publish}")]},
            "hangs": {
                "argv": [_hook(tmp_path, "hangs", f"[ -e {fixed} ] || exec sleep 30\n{publish}")],
                "timeout_seconds": 1,
            },
        },
    )
    vault_id = agent.vault_id
    cases = {"exits": "command_failed", "hangs": "command_timeout"}
    policies = {
        hook: _create_policy(
            cp, vault_id, f"hook/{hook}", {"type": "command", "settings": {"command": hook}}
        )
        for hook in cases
    }
    agent.start()
    world = tmp_path / "world"
    for hook, reason in cases.items():
        old = f"old value of {hook}"
        secret_id = _create(agent, f"hook/{hook}", old)
        (world / secret_id).write_text(old)
        _governed(cp, vault_id, secret_id, policies[hook])
        started = time.monotonic()
        _fails_then_recovers(
            cp,
            agent,
            secret_id,
            reason,
            old,
            lambda s=secret_id, o=old: (world / s).read_text() == o,
        )
        assert time.monotonic() - started < 30  # timeouts are enforced (1 s each)
        fixed.touch()
        new = _recovers(cp, agent, secret_id, old)
        assert (world / secret_id).read_text() == new
        fixed.unlink()


def test_agent_killed_mid_rotation_serves_the_old_value_and_reports_interrupted(
    control_plane: ControlPlane, make_agent: Any, tmp_path: Path
) -> None:
    cp = control_plane
    applying, release, pid = tmp_path / "applying", tmp_path / "release", tmp_path / "pid"
    body = (  # only the new version (2) hangs, and only until released; a revert (1) publishes
        f'if [ "$KEYVAULT_SECRET_VERSION" = 2 ] && [ ! -e {release} ]; then\n'
        f"  echo $$ > {pid}; touch {applying}; exec sleep 60\nfi\n"
        'printf %s "$v" > "$W"'
    )
    agent: FleetAgent = _keyed_agent(cp, make_agent, tmp_path, "killed")
    _configure(
        agent, commands={"slow": {"argv": [_hook(tmp_path, "slow", body)], "timeout_seconds": 120}}
    )
    vault_id = agent.vault_id
    policy_id = _create_policy(
        cp, vault_id, "app/**", {"type": "command", "settings": {"command": "slow"}}
    )
    agent.start()
    old = "the value before the crash"
    secret_id = _create(agent, "app/token", old)
    (tmp_path / "world" / secret_id).write_text("untouched")
    _governed(cp, vault_id, secret_id, policy_id)

    command_id = _rotate(cp, vault_id, secret_id, wait=False)
    wait_for(applying.exists, 30, "the hook to run with the new value")
    assert agent.proc is not None
    agent.proc.stop(signal.SIGKILL)
    os.kill(int(pid.read_text()), signal.SIGKILL)  # its own process group outlives the agent
    assert _item(cp, vault_id, secret_id)["version"] == 1

    agent.start()
    assert _served(agent, secret_id) == (old, 1)
    [alert] = wait_for(lambda: _alerts(cp, "rotation_failed", vault_id, secret_id), 30, "alert")
    assert alert["state"] == "open" and "interrupted" in alert["message"], alert
    done = _command_done(cp, command_id)
    assert done["state"] == "failed" and "agent stopped" in json.dumps(done["result"]), done
    assert (tmp_path / "world" / secret_id).read_text() == old  # recovery re-applied it
    item = wait_for(
        lambda: (i := _item(cp, vault_id, secret_id))["rotation"]["state"] == "failed" and i,
        30,
        "the failure in the inventory",
    )
    assert item["version"] == 1
    time.sleep(1.5)  # more scheduler passes and heartbeats: nothing is reported again
    assert [a["id"] for a in _alerts(cp, "rotation_failed", vault_id, secret_id)] == [alert["id"]]
    assert _served(agent, secret_id) == (old, 1)

    release.touch()
    new = _recovers(cp, agent, secret_id, old)
    assert (tmp_path / "world" / secret_id).read_text() == new


# ---------------------------------------------------------------- overdue (about 70 s)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_overdue_is_raised_on_schedule_while_the_vault_is_offline(
    control_plane: ControlPlane, make_agent: Any, tmp_path: Path
) -> None:
    cp = control_plane
    agent: FleetAgent = _keyed_agent(cp, make_agent, tmp_path, "offline")
    _configure(agent)
    vault_id = agent.vault_id
    policy_id = _create_policy(
        cp, vault_id, "svc/*", {"type": "random", "settings": {}}, interval=60, notice=0
    )
    agent.start()
    secret_id = _create(agent, "svc/key", "soon overdue")
    item = wait_for(
        lambda: (i := _governed(cp, vault_id, secret_id, policy_id))["rotation"] and i,
        30,
        "the schedule in the inventory",
    )
    due = _time(item["rotation"]["next_due_at"])
    since_created = (due - _time(item["created_at"])).total_seconds()
    assert 58 < since_created < 62, item  # created + interval, no jitter configured
    agent.stop()  # offline from now on: the agent cannot rotate it

    def vault_status() -> str:
        with cp.api() as c:
            return str(c.get(f"/vaults/{vault_id}").json()["status"])

    wait_for(lambda: vault_status() == "offline", 30, "the vault offline")
    while not (raised := _alerts(cp, "rotation_overdue", vault_id, secret_id)):
        now = datetime.now(due.tzinfo)
        assert now < due + timedelta(seconds=20), "rotation_overdue was not raised"
        time.sleep(0.2)
    seen = datetime.now(due.tzinfo)
    [alert] = raised
    assert _time(alert["created_at"]) > due, (alert, due)  # not before due
    assert seen - due < timedelta(seconds=10)  # on schedule (the sweep runs every second)
    assert alert["state"] == "open" and policy_id in alert["message"]
    assert vault_status() == "offline"
    time.sleep(2)  # more sweeps: still one alert
    assert len(_alerts(cp, "rotation_overdue", vault_id, secret_id)) == 1

    agent.start()  # back online: the scheduler rotates the overdue secret, which resolves it
    wait_for(
        lambda: (
            [a["state"] for a in _alerts(cp, "rotation_overdue", vault_id, secret_id)]
            == ["resolved"]
        ),
        30,
        "the overdue alert resolved by the scheduler's rotation",
    )
    value, version = _served(agent, secret_id)
    assert version == 2 and value != "soon overdue"
    assert _item(cp, vault_id, secret_id)["rotation"]["state"] == "ok"
