"""``workers: 2`` and the control plane: every worker's audit chain reaches it.

A real agent with two serving processes, enrolled to a real control plane (PostgreSQL + Redis,
mutual TLS), serves reads by *name* through both workers (fresh connections spread by the
kernel). Worker 0's uplink ships its own log as chain 0 (ids ``a<seq>``, as always) and worker
1's log as chain 1 (ids ``w1.a<seq>``): the control plane ends up with every entry of both
chains, one per local line, and no secret name in any frame sent. With the workers lowered to
one, chain 1's cursor is kept (not reset), and raised again its new entries follow on. A worker
whose log was lost starts a new epoch and its chain ships under it; a PostgreSQL store works
the same way.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import init_agent_dir
from tests.e2e.conftest import ControlPlane, FleetAgent, enroll, wait_for

SPREAD = 24  # fresh connections: both workers answer some (checked through their logs)
_ID = re.compile(r"^sec_[A-Za-z0-9]+$")


def _local(agent: FleetAgent) -> dict[int, int]:
    """Entries in each local audit log: chain 0 (the data folder's), chain 1 (audit-w1/)."""
    logs = {0: agent.dir.path / "audit.log", 1: agent.dir.path / "audit-w1" / "audit.log"}
    return {k: len(p.read_bytes().splitlines()) if p.exists() else 0 for k, p in logs.items()}


def _upstream(cp: ControlPlane, vault_id: str) -> dict[int, list[dict[str, Any]]]:
    """The control plane's audit entries of the vault by chain (from their ids)."""
    out: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    after = 0
    with cp.api() as c:
        while True:
            r = c.get("/audit", params={"source": vault_id, "limit": 500, "after": after})
            r.raise_for_status()
            items = r.json()["items"]
            if not items:
                return out
            for item in items:
                local_id = item["event_id"].split(":", 1)[1]
                out[1 if local_id.startswith("w1.") else 0].append(item)
            after = items[-1]["seq"]


def _counts(cp: ControlPlane, vault_id: str) -> dict[int, int]:
    return {k: len(v) for k, v in _upstream(cp, vault_id).items()}


def _cursor(agent: FleetAgent, chain: int) -> dict[str, Any] | None:
    with sqlite3.connect(agent.dir.path / "store.db") as db:
        row = db.execute(
            "SELECT value FROM kv_meta WHERE key = ?", (f"uplink.audit_cursor.w{chain}",)
        ).fetchone()
    return None if row is None else dict(json.loads(row[0]))


def _spread(agent: FleetAgent, call: Callable[[Any], Any]) -> None:
    assert agent.proc is not None
    before = _local(agent)
    for _ in range(SPREAD):
        with agent.proc.client() as kv:
            call(kv)
    after = _local(agent)
    assert all(after[k] > before[k] for k in before), (before, after)  # both workers served


def _audit_alerts(cp: ControlPlane, vault_id: str) -> list[str]:
    """The messages of the vault's open ``audit_failure`` alerts."""
    with cp.api() as c:
        items = c.get("/alerts", params={"state": "open"}).json()["items"]
    return [
        a["message"] for a in items if a["kind"] == "audit_failure" and a["vault_id"] == vault_id
    ]


def _shipped(cp: ControlPlane, agent: FleetAgent) -> dict[int, int]:
    """Wait until the control plane holds exactly each local log's entries; the counts."""
    wait_for(
        lambda: _counts(cp, agent.vault_id) == _local(agent), 60, "every chain's entries upstream"
    )
    return _local(agent)


def _read_on_two_workers(
    cp: ControlPlane, agent: FleetAgent, name: str
) -> tuple[str, dict[int, int]]:
    """Start with ``workers: 2``, create ``name``, read it on both workers, wait until every
    entry is upstream and stop; (the secret's id, each chain's entry count)."""
    agent.start(env={"KEYVAULT_WORKERS": "2"})
    assert agent.proc is not None
    with agent.proc.client() as c:
        sid = str(c.create(name, value="v")["id"])
    _spread(agent, lambda kv: kv.get(sid))
    counts = _shipped(cp, agent)
    agent.stop()
    return sid, counts


def test_every_workers_audit_chain_reaches_the_control_plane_without_names(
    control_plane: ControlPlane, make_agent: Callable[..., FleetAgent], tmp_path: Path
) -> None:
    cp = control_plane
    agent = make_agent(cp, "workers")
    trace = tmp_path / "uplink-trace.jsonl"
    env = {"KEYVAULT_WORKERS": "2", "KEYVAULT_UPLINK__TRACE_FILE": str(trace)}
    agent.start(env=env)
    names = [f"hchains/canary-{secrets.token_hex(8)}" for _ in range(3)]
    assert agent.proc is not None
    with agent.proc.client() as c:
        ids = [c.create(name, value="v")["id"] for name in names]
    _spread(agent, lambda kv: [kv.get(name) for name in names])  # reads by name, both workers
    counts = _shipped(cp, agent)
    assert counts[1] > 0

    upstream = _upstream(cp, agent.vault_id)
    vid = agent.vault_id
    assert sorted(i["event_id"] for i in upstream[1]) == sorted(
        f"{vid}:w1.a{s}" for s in range(1, counts[1] + 1)
    )
    assert sorted(i["event_id"] for i in upstream[0]) == sorted(
        f"{vid}:a{s}" for s in range(1, counts[0] + 1)
    )
    assert all(i["details"].get("chain") == 1 for i in upstream[1])
    assert all("chain" not in i["details"] for i in upstream[0])
    # names were resolved to ids on both chains; no name was ever sent
    for chain in (0, 1):
        targets = {i["target"] for i in upstream[chain] if i["action"].startswith("secrets.")}
        assert targets & set(ids), (chain, targets)
        assert all(x is None or _ID.match(x) for x in targets), targets
    sent = trace.read_text()
    assert '"chain":1' in sent.replace(" ", "")
    for name in names:
        assert name not in sent and name.split("/")[1] not in sent
    acked = _cursor(agent, 1)
    assert acked == {"vault_id": vid, "epoch": 1, "seq": counts[1]}
    agent.stop()

    # workers lowered to one: chain 1 is gone, its cursor kept; chain 0 ships on
    agent.start(env={"KEYVAULT_WORKERS": "1"})
    with agent.proc.client() as c:
        c.get(names[0])
    _shipped(cp, agent)
    assert _cursor(agent, 1) == acked
    agent.stop()

    # raised again: chain 1 follows on from its cursor
    agent.start(env={"KEYVAULT_WORKERS": "2"})
    _spread(agent, lambda kv: kv.get(ids[1]))
    again = _shipped(cp, agent)
    assert again[1] > counts[1]
    assert _cursor(agent, 1) == {"vault_id": vid, "epoch": 1, "seq": again[1]}
    agent.stop()


def test_a_workers_chain_that_restarts_ships_under_its_new_epoch_and_alerts(
    control_plane: ControlPlane, make_agent: Callable[..., FleetAgent]
) -> None:
    cp = control_plane
    agent = make_agent(cp, "restarts")
    sid, first = _read_on_two_workers(cp, agent, "hchains/restart")
    for name in ("audit.log", "audit.head"):  # worker 1's log deleted while stopped
        (agent.dir.path / "audit-w1" / name).unlink()

    agent.start(env={"KEYVAULT_WORKERS": "2"})
    _spread(agent, lambda kv: kv.get(sid))
    vid = agent.vault_id

    def new_chain() -> bool:
        ups = _upstream(cp, vid)[1]
        fresh = [i for i in ups if i["event_id"].startswith(f"{vid}:w1.a2.")]
        return len(fresh) == _local(agent)[1] and len(ups) == first[1] + len(fresh)

    wait_for(new_chain, 60, "worker 1's new chain upstream")
    messages = _audit_alerts(cp, vid)
    assert any("worker 1's audit chain restarted" in m for m in messages), messages
    assert not any("its audit chain restarted" in m for m in messages), messages  # chain 0 fine
    assert _cursor(agent, 1) == {"vault_id": vid, "epoch": 2, "seq": _local(agent)[1]}
    agent.stop()


def test_a_workers_chain_restored_from_a_backup_is_caught_by_the_next_heartbeat(
    control_plane: ControlPlane, make_agent: Callable[..., FleetAgent], tmp_path: Path
) -> None:
    """The whole data folder (store, keystore checkpoints, every worker's log) restored from an
    older copy agrees with itself, so no worker can tell; the control plane, which holds worker
    1's chain further along, sees its head go back in the next heartbeat, before any new entry."""
    cp = control_plane
    agent = make_agent(cp, "restored-workers")
    workers = {"KEYVAULT_WORKERS": "2"}
    sid, before = _read_on_two_workers(cp, agent, "hchains/restored")
    backup = tmp_path / "backup"
    shutil.copytree(agent.dir.path, backup)
    agent.start(env=workers)
    _spread(agent, lambda kv: kv.get(sid))
    after = _shipped(cp, agent)
    agent.stop()
    assert after[1] > before[1]
    shutil.rmtree(agent.dir.path)
    shutil.copytree(backup, agent.dir.path)

    agent.start(env=workers)  # nothing read: no chain gets a new entry
    vid = agent.vault_id
    messages = wait_for(
        lambda: [m for m in _audit_alerts(cp, vid) if "worker 1's audit head moved back" in m],
        60,
        "the control plane's check of worker 1's heartbeat head",
    )
    assert f"from entry {after[1]} to entry {before[1]}" in messages[0], messages
    assert _local(agent) == before  # the alert came from the heartbeat, not from new entries
    agent.stop()


def test_worker_chains_of_an_agent_on_postgresql_reach_the_control_plane(
    control_plane: ControlPlane, tmp_path: Path, pg_url: str
) -> None:
    cp = control_plane
    folder = init_agent_dir(tmp_path / "pg-agent", storage_url=pg_url)
    done = enroll(folder, cp.replicas[0].gateway_url, cp.enrollment_token(), "--name", "pg")
    assert done.returncode == 0, done.stderr
    agent = FleetAgent(folder)
    try:
        agent.start(env={"KEYVAULT_WORKERS": "2"})
        assert agent.proc is not None
        with agent.proc.client() as c:
            sid = c.create("hchains/pg", value="v")["id"]
        _spread(agent, lambda kv: kv.get("hchains/pg"))
        counts = _shipped(cp, agent)
        assert counts[1] > 0
        chain1 = _upstream(cp, agent.vault_id)[1]
        assert sid in {i["target"] for i in chain1}
    finally:
        agent.stop()
