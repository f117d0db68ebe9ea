"""Audit that cannot disappear quietly: a real agent process and a real control plane
(PostgreSQL + Redis, mutual TLS).

The audit log of a stopped agent is deleted, truncated, or rolled back (an older copy of both
files restored). Each time the agent notices at start (the keystore holds the chain's epoch and
a recent checkpoint, authenticated under the master key), keeps the damaged files aside, starts
a new chain epoch, shows the problem in ``/health`` and raises an ``audit_failure`` alert that
reaches the operator; it keeps serving, and the new chain's entries reach the control plane
(not dropped as duplicates of the old chain's ids).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import ControlPlane, FleetAgent, wait_for

LOG, HEAD = "audit.log", "audit.head"


def _audit_count(cp: ControlPlane, vault_id: str) -> int:
    with cp.api() as c:
        r = c.get("/audit", params={"source": vault_id, "limit": 500})
        r.raise_for_status()
        return len(r.json()["items"])


def _alerts(cp: ControlPlane, vault_id: str) -> list[str]:
    with cp.api() as c:
        items = c.get("/alerts", params={"state": "open"}).json()["items"]
    return [
        a["message"] for a in items if a["kind"] == "audit_failure" and a["vault_id"] == vault_id
    ]


def _write(agent: FleetAgent, *names: str) -> None:
    assert agent.proc is not None
    with agent.proc.client() as c:
        for name in names:
            c.create(name, value="v")


def _run_and_stop(cp: ControlPlane, agent: FleetAgent, *names: str) -> int:
    """Start, write ``names``, wait until the control plane has the audit entries, stop
    cleanly; returns how many audit entries the control plane holds for the vault."""
    agent.start()
    wait_for(lambda: agent.health()["uplink"]["state"] == "connected", 30, "the uplink")
    _write(agent, *names)
    seq = agent.health()["audit_seq"]
    wait_for(lambda: _audit_count(cp, agent.vault_id) >= seq, 30, "the audit entries upstream")
    agent.stop()
    return _audit_count(cp, agent.vault_id)


def _detected(
    cp: ControlPlane, agent: FleetAgent, before: int, word: str, *, evidence: bool = True
) -> None:
    """After tampering: the agent starts, reports the problem, keeps serving, ships a new
    chain; the operator sees the alert."""
    agent.start()
    health = agent.health()
    assert health["audit"]["status"] == "broken", health
    assert word in health["audit"]["problem"], health["audit"]
    assert health["audit"]["epoch"] == 2
    kept = list(agent.dir.path.glob("audit-damaged-*"))
    assert bool(kept) is evidence, "what is left of the damaged chain is kept aside"
    messages = wait_for(lambda: _alerts(cp, agent.vault_id), 30, "the audit alert upstream")
    assert any(word in m for m in messages), messages
    with cp.api() as c:  # the vault's health upstream says so too
        wait_for(
            lambda: c.get(f"/vaults/{agent.vault_id}").json()["health"].get("status") == "degraded",
            30,
            "a degraded heartbeat",
        )
    _write(agent, "after/the-loss")
    # the new chain's entries are stored, not dropped as duplicates of the old chain's ids
    wait_for(lambda: _audit_count(cp, agent.vault_id) > before, 30, "the new chain upstream")
    # the control plane saw the chain restart on its own, too
    wait_for(
        lambda: any("restarted" in m for m in _alerts(cp, agent.vault_id)), 30, "restart alert"
    )
    # a clean restart afterwards is quiet: the new chain is the checkpointed one
    agent.stop()
    agent.start()
    assert agent.health()["audit"]["status"] == "ok", agent.health()


def test_a_deleted_audit_log_is_detected_and_alerted(
    control_plane: ControlPlane, make_agent: Callable[..., FleetAgent]
) -> None:
    agent = make_agent(control_plane, "deleted")
    before = _run_and_stop(control_plane, agent, "a/one", "a/two")
    (agent.dir.path / LOG).unlink()
    (agent.dir.path / HEAD).unlink()
    _detected(control_plane, agent, before, "missing", evidence=False)


def test_a_truncated_audit_log_is_detected_and_alerted(
    control_plane: ControlPlane, make_agent: Callable[..., FleetAgent]
) -> None:
    agent = make_agent(control_plane, "truncated")
    before = _run_and_stop(control_plane, agent, "t/one", "t/two", "t/three")
    log = agent.dir.path / LOG
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:2]))  # the head file still names the last entry
    _detected(control_plane, agent, before, "truncated")


def test_a_rolled_back_audit_log_is_detected_and_alerted(
    control_plane: ControlPlane, make_agent: Callable[..., FleetAgent], tmp_path: Path
) -> None:
    agent = make_agent(control_plane, "rolled")
    _run_and_stop(control_plane, agent, "r/one")
    copy = tmp_path / "older-copy"
    copy.mkdir()
    for name in (LOG, HEAD):
        shutil.copy2(agent.dir.path / name, copy / name)
    before = _run_and_stop(control_plane, agent, "r/two", "r/three")
    for name in (LOG, HEAD):  # both files, consistent with each other, just older
        shutil.copy2(copy / name, agent.dir.path / name)
    _detected(control_plane, agent, before, "rolled back")


def test_a_whole_host_restored_from_a_backup_is_caught_by_the_control_plane(
    control_plane: ControlPlane, make_agent: Callable[..., FleetAgent], tmp_path: Path
) -> None:
    """Store, keystore checkpoint and audit log restored together agree with each other, so
    the agent cannot tell; the control plane, which saw the head further along, can."""
    cp = control_plane
    agent = make_agent(cp, "restored")
    _run_and_stop(cp, agent, "h/one")
    backup = tmp_path / "backup"
    shutil.copytree(agent.dir.path, backup)
    _run_and_stop(cp, agent, "h/two", "h/three", "h/four")
    shutil.rmtree(agent.dir.path)
    shutil.copytree(backup, agent.dir.path)
    agent.start()
    assert agent.health()["audit"]["status"] == "ok"  # locally consistent
    messages = wait_for(
        lambda: [m for m in _alerts(cp, agent.vault_id) if "backwards" in m],
        30,
        "the control plane's head check",
    )
    assert agent.vault_id in messages[0]
    _write(agent, "h/after")  # new entries reuse numbers the control plane already holds
    wait_for(lambda: any("rewritten" in m for m in _alerts(cp, agent.vault_id)), 30, "rewritten")
