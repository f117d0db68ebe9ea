"""Audit checkpoints with several replicas on one shared PostgreSQL store: each replica's audit
log has its own identity and checkpoint row, so replicas never raise false alerts about each
other's logs, and a replica's lost log is still caught (real agent processes, real PostgreSQL)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.audit.checkpoint import PROBLEMS
from agent.crypto import generate_key_file
from agent.provision import InitOptions, initialise
from agent.store.db import Store
from agent.uplink import outbox
from tests.conftest import AgentDir, AgentProcess, start_agent

pytestmark = pytest.mark.postgres


def _replicas(tmp_path: Path, pg_url: str, n: int) -> list[AgentDir]:
    key = tmp_path / "master.key"
    generate_key_file(key)
    first = initialise(InitOptions(tmp_path / "r0", key_file=key, storage_url=pg_url, port=0))
    dirs = [AgentDir(tmp_path / "r0", first.admin_token)]
    for i in range(1, n):
        folder = tmp_path / f"r{i}"
        initialise(InitOptions(folder, key_file=key, storage_url=pg_url, port=0, join=True))
        dirs.append(AgentDir(folder, first.admin_token))
    return dirs


def _alerts(pg_url: str) -> list[str]:
    store = Store(pg_url)
    try:
        rows = store.read_sync(lambda c: outbox.oldest(c, 100))
    finally:
        store.close()
    return [r.body["message"] for r in rows if r.kind == outbox.ALERT]


def _start(dirs: list[AgentDir], names: list[str]) -> list[AgentProcess]:
    procs: list[AgentProcess] = []
    for folder, name in zip(dirs, names, strict=True):
        procs.append(start_agent(folder, env={"KEYVAULT_REPLICA_NAME": name}))
    return procs


def _serve(procs: list[AgentProcess], round_: int) -> None:
    """Every replica writes and reads (its own audit log grows), interleaved."""
    for i, proc in enumerate(procs):
        with proc.client() as kv:
            kv.create(f"app/r{i}-{round_}", f"value-{i}-{round_}")
    for proc in procs:
        with proc.client() as kv:
            for i in range(len(procs)):
                assert kv.get(f"app/r{i}-{round_}")["value"] == f"value-{i}-{round_}"


def _health(proc: AgentProcess) -> dict[str, object]:
    with proc.client() as kv:
        audit = kv.health()["audit"]
    assert isinstance(audit, dict)
    return audit


def _stop(procs: list[AgentProcess]) -> None:
    for proc in procs:
        assert proc.stop() == 0


def test_three_replicas_on_one_store_restart_without_false_alerts(
    tmp_path: Path, pg_url: str
) -> None:
    dirs = _replicas(tmp_path, pg_url, 3)
    names = ["vault-0", "vault-1", "vault-2"]
    procs = _start(dirs, names)
    try:
        _serve(procs, 1)
    finally:
        _stop(procs)
    procs = _start(dirs, names)  # each finds its own log where its own checkpoint says
    try:
        _serve(procs, 2)
        assert [_health(p)["status"] for p in procs] == ["ok"] * 3
    finally:
        _stop(procs)
    assert _alerts(pg_url) == []


def test_a_wiped_replica_volume_is_caught_as_that_replicas_log_missing(
    tmp_path: Path, pg_url: str
) -> None:
    dirs = _replicas(tmp_path, pg_url, 2)
    names = ["vault-0", "vault-1"]
    procs = _start(dirs, names)
    try:
        _serve(procs, 1)
    finally:
        _stop(procs)
    shutil.rmtree(dirs[1].path)  # pod vault-1's volume wiped; its init joins the store again
    initialise(
        InitOptions(dirs[1].path, key_file=tmp_path / "master.key", storage_url=pg_url, port=0,
                    join=True)
    )  # fmt: skip
    procs = _start(dirs, names)
    try:
        _serve(procs, 2)  # it serves, on a new chain, and says so
        broken = _health(procs[1])
        assert broken["status"] == "broken" and broken["epoch"] == 2
        assert "missing" in str(broken["problem"])
        assert _health(procs[0])["status"] == "ok"  # the other replica is not disturbed
    finally:
        _stop(procs)
    assert _alerts(pg_url) == [PROBLEMS["missing"]]


def test_a_renamed_replica_with_a_long_name_still_has_its_own_log_checked(
    tmp_path: Path, pg_url: str
) -> None:
    """A name too long for the per-host row an older version wrote (it refused to start on
    PostgreSQL), and a new name later (a container recreated, a host renamed): the log's own
    id still finds its checkpoint, so a rolled-back log is caught and not quietly adopted."""
    (folder,) = _replicas(tmp_path, pg_url, 1)
    long_name = "payments-production-keyvault-agent-" + "x" * 28 + "-0"
    (proc,) = _start([folder], [long_name])
    try:
        _serve([proc], 1)
    finally:
        _stop([proc])
    files = ("audit.log", "audit.head", "audit.id")
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in files:
        shutil.copy2(folder.path / name, copy / name)
    (proc,) = _start([folder], [long_name])
    try:
        _serve([proc], 2)
    finally:
        _stop([proc])
    for name in files:  # the older copy of the log restored
        shutil.copy2(copy / name, folder.path / name)
    (proc,) = _start([folder], ["renamed-host"])
    try:
        audit = _health(proc)
        assert audit["status"] == "broken" and "rolled back" in str(audit["problem"])
    finally:
        _stop([proc])
    assert _alerts(pg_url) == [PROBLEMS["rolled back"]]
