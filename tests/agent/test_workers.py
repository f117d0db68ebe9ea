"""``workers: 2``: two real serving processes on one port, over one SQLite data folder.

Every request here opens its own mutual-TLS connection, so the kernel (SO_REUSEPORT) spreads
them over both workers; each worker writes its own audit log, and the tests check that both
logs grew, i.e. that both workers answered, before and after each change.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.settings import AgentSettings
from common.errors import AuthenticationError, ConflictError, NotFoundError
from common.typedconf import ValidationError
from tests.conftest import AgentDir, AgentProcess, init_agent_dir, start_agent

ROOT = Path(__file__).resolve().parents[2]
SPREAD = 24  # fresh connections per step: both workers are hit (checked through their logs)
TWO = {"KEYVAULT_WORKERS": "2"}


def _logs(running: AgentProcess) -> list[Path]:
    return [running.dir.path / "audit.log", running.dir.path / "audit-w1" / "audit.log"]


def _lines(running: AgentProcess) -> list[int]:
    return [len(p.read_bytes().splitlines()) for p in _logs(running)]


def _children(pid: int) -> list[int]:
    """The worker processes of supervisor ``pid`` (not multiprocessing's resource tracker)."""
    raw = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    pids = [int(x) for x in raw.split()]
    return [p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def _spread(running: AgentProcess, token: str | None, call: Callable[[Any], Any]) -> list[Any]:
    """``call(client)`` over :data:`SPREAD` fresh connections; each result or exception, and
    an assertion that both workers' audit logs grew meanwhile."""
    before = _lines(running)
    out: list[Any] = []
    for _ in range(SPREAD):
        with running.client(token) as kv:
            try:
                out.append(call(kv))
            except Exception as exc:
                out.append(exc)
    after = _lines(running)
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    return out


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    folder = init_agent_dir(tmp_path_factory.mktemp("workers") / "agent", client_cert="required")
    running = start_agent(folder, env=TWO)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.stop()


def _audit_verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """``keyvault agent audit verify`` on the folder, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "apps.cli.main", "agent", "audit", "verify", "--data-dir",
         str(data_dir)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def test_a_token_revoked_through_one_worker_is_refused_at_once_by_every_worker(
    two_workers: AgentProcess,
) -> None:
    with two_workers.client() as admin:
        admin.create("rev/s", "one")
        reader = admin.create_token("reader", [{"path": "rev/**", "capabilities": ["read"]}])
    token = reader["token"]
    warm = _spread(two_workers, token, lambda kv: kv.get("rev/s")["value"])
    assert warm == ["one"] * SPREAD  # both workers now hold the token in their caches
    with two_workers.client() as admin:
        admin.revoke_token(reader["info"]["id"])
    refused = _spread(two_workers, token, lambda kv: kv.get("rev/s")["value"])
    assert all(isinstance(r, AuthenticationError) for r in refused), refused


def test_a_secret_updated_or_deleted_through_one_worker_reads_new_on_every_worker(
    two_workers: AgentProcess,
) -> None:
    with two_workers.client() as admin:
        admin.create("upd/s", "old value")
    assert _spread(two_workers, None, lambda kv: kv.get("upd/s")["value"]) == ["old value"] * SPREAD
    with two_workers.client() as admin:
        admin.update("upd/s", value="new value")
    assert _spread(two_workers, None, lambda kv: kv.get("upd/s")["value"]) == ["new value"] * SPREAD
    with two_workers.client() as admin:
        admin.update("upd/s", description="described")
    described = _spread(two_workers, None, lambda kv: kv.get("upd/s")["description"])
    assert described == ["described"] * SPREAD
    with two_workers.client() as admin:
        admin.delete("upd/s")
    gone = _spread(two_workers, None, lambda kv: kv.get("upd/s"))
    assert all(isinstance(r, NotFoundError) for r in gone), gone


def test_concurrent_writes_through_both_workers_all_land(two_workers: AgentProcess) -> None:
    acked: list[str] = []
    failed: list[BaseException] = []
    before = _lines(two_workers)

    def writer(k: int) -> None:
        for i in range(15):
            name = f"conc/t{k}/s{i}"
            try:
                with two_workers.client() as kv:
                    kv.create(name, f"v{k}-{i}")
                acked.append(name)
            except BaseException as exc:
                failed.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failed, failed
    assert len(acked) == 60
    assert all(a > b for a, b in zip(_lines(two_workers), before, strict=True))
    with two_workers.client() as kv:
        listed = {item["name"] for item in kv.list(prefix="conc/", limit=100)["secrets"]}
        assert listed == set(acked)
        for name in acked:
            k, i = name.split("/")[1][1:], name.split("/")[2][1:]
            assert kv.get(name)["value"] == f"v{k}-{i}"


def _finished(kv: Any, job: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (state := kv.job(job["id"]))["state"] == "running":
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    return dict(state)


def test_kek_rotations_through_any_worker_are_followed_by_every_worker(tmp_path: Path) -> None:
    """A KEK made, and old ones destroyed, by one worker: every worker reads the re-wrapped
    values, a write sealed meanwhile under a retired KEK is sealed again under the active one,
    and two rotations at once leave one KEK. After all of it, one freshly unlocked process
    opens every value, so nothing was written under a destroyed KEK."""
    folder = init_agent_dir(tmp_path / "agent", client_cert="required")
    running = start_agent(folder, env=TWO)
    values = {f"kek/s{i:02d}": f"value-{i}" for i in range(30)}
    written: dict[str, str] = {}
    failed: list[BaseException] = []
    try:
        with running.client() as kv:
            for name, value in values.items():
                kv.create(name, value)

        def read_all(kv: Any) -> dict[str, str]:
            return {name: kv.get(name)["value"] for name in values}

        assert _spread(running, None, read_all) == [values] * SPREAD  # cached on both workers
        stop = threading.Event()

        def writer() -> None:  # fresh connections: both workers write while keys rotate
            i = 0
            while not stop.is_set():
                name, value = f"kek/w{i:04d}", f"written-{i}"
                try:
                    with running.client() as kv:
                        kv.update(name, value=value) if name in written else kv.create(name, value)
                    written[name] = value
                except Exception as exc:
                    failed.append(exc)
                i = (i + 1) % 40  # new secrets, then new versions of them

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            for _ in range(3):  # each through whichever worker the kernel picks
                with running.client() as kv:
                    done = _finished(kv, kv.rotate_kek())
                assert done["state"] == "succeeded", done
                assert _spread(running, None, read_all) == [values] * SPREAD
            # two at once: each worker refuses a second of its own, and a rotation overtaken by
            # one in the other worker stops without destroying anything
            jobs, clients = [], [running.client() for _ in range(2)]
            for kv in clients:
                try:
                    jobs.append((kv, kv.rotate_kek()))
                except ConflictError as exc:
                    assert "already running" in exc.message, exc.message
            ended = [_finished(kv, job) for kv, job in jobs]
            for kv in clients:
                kv.close()
            assert any(e["state"] == "succeeded" for e in ended), ended
            for e in ended:
                assert e["state"] == "succeeded" or "another key rotation" in e["error"], e
        finally:
            stop.set()
            thread.join(60)
        assert not failed, failed[:3]
        assert len(written) == 40
        assert _spread(running, None, read_all) == [values] * SPREAD
    finally:
        if running.proc.poll() is None:
            assert running.stop() == 0
    restarted = start_agent(folder)  # one process, unlocked afresh
    try:
        with restarted.client() as kv:
            assert read_all(kv) == values
            assert {name: kv.get(name)["value"] for name in written} == written
            # what rotations left, or a later one will finish: no value on a destroyed KEK
            with_rotation = _finished(kv, kv.rotate_kek())
            assert with_rotation["state"] == "succeeded", with_rotation
            live = [k for k in kv.keys()["keks"] if k["state"] != "destroyed"]
            assert len(live) == 1 and live[0]["state"] == "active", live
    finally:
        assert restarted.stop() == 0


def test_rekey_is_refused_while_several_workers_run(two_workers: AgentProcess) -> None:
    with two_workers.client() as kv, pytest.raises(ConflictError) as refused:
        kv.rekey(new_passphrase="a brand new passphrase")
    assert "workers: 1" in refused.value.message and "restart" in refused.value.message
    assert _spread(two_workers, None, lambda kv: kv.health()["status"]) == ["healthy"] * SPREAD


def test_a_change_stream_hears_of_writes_through_the_other_worker(
    two_workers: AgentProcess,
) -> None:
    events: list[dict[str, Any]] = []
    opened = threading.Event()
    stream_client = two_workers.client()

    def follow() -> None:
        try:
            for event in stream_client.changes(on_open=opened.set):
                events.append(event)
        except Exception:
            pass  # the client is closed under it at the end

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        assert opened.wait(10)
        names = iter(range(SPREAD))
        _spread(two_workers, None, lambda kv: kv.create(f"stream/s{next(names)}", "v"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e["event"] == "resync" for e in events):
            time.sleep(0.05)
    finally:
        stream_client.close()
        thread.join(1)
    # the stream's worker sent its own writes by name; the other worker's came as "resync"
    assert any(e["event"] == "resync" for e in events), events
    assert all("value" not in e for e in events)


def test_sigterm_stops_every_worker_and_every_audit_log_verifies_and_backs_up(
    tmp_path: Path,
) -> None:
    folder = init_agent_dir(tmp_path / "agent", client_cert="required")
    running = start_agent(folder, env=TWO)
    try:
        workers = _children(running.proc.pid)
        assert len(workers) == 2
        with pytest.raises(RuntimeError, match="already running"):
            start_agent(folder, env=TWO, timeout=20)
        _spread(running, None, lambda kv: kv.health())
        started = time.monotonic()
        assert running.stop(timeout=20) == 0
        assert time.monotonic() - started < 15
        assert not any(_alive(pid) for pid in workers)
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
    assert not (folder.path / "agent.url").exists()
    verified = _audit_verify(folder.path)
    assert verified.returncode == 0, verified.stderr
    assert "audit log OK" in verified.stdout
    assert "audit log audit-w1 OK" in verified.stdout
    backup = subprocess.run(
        [sys.executable, "-m", "apps.cli.main", "agent", "backup", "--data-dir",
         str(folder.path), "--out", str(tmp_path / "backup")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert backup.returncode == 0, backup.stderr
    for name in ("audit.log", "audit.head", "audit.id"):  # every worker's log is backed up
        assert (tmp_path / "backup" / "audit-w1" / name).exists()


def test_a_worker_that_dies_stops_the_agent_with_a_non_zero_exit(tmp_path: Path) -> None:
    folder = init_agent_dir(tmp_path / "agent", client_cert="required")
    running = start_agent(folder, env=TWO)
    try:
        workers = _children(running.proc.pid)
        os.kill(workers[1], signal.SIGKILL)
        code = running.proc.wait(20)
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
    assert code != 0
    assert not _alive(workers[0])
    log = (folder.path / "agent.log").read_text()
    assert "worker process 1 stopped unexpectedly" in log
    assert "Traceback" not in log


def test_two_workers_on_postgresql_refuse_a_revoked_token_and_keep_their_own_logs(
    tmp_path: Path, pg_url: str
) -> None:
    folder = init_agent_dir(tmp_path / "agent", storage_url=pg_url, client_cert="required")
    running = start_agent(folder, env=TWO)
    try:
        with running.client() as admin:
            admin.create("pg/s", "one")
            reader = admin.create_token("reader", [{"path": "pg/**", "capabilities": ["read"]}])
        token = reader["token"]
        assert _spread(running, token, lambda kv: kv.get("pg/s")["value"]) == ["one"] * SPREAD
        with running.client() as admin:
            admin.revoke_token(reader["info"]["id"])
        refused = _spread(running, token, lambda kv: kv.get("pg/s")["value"])
        assert all(isinstance(r, AuthenticationError) for r in refused), refused
        assert running.stop(timeout=20) == 0
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
    # each worker is its own replica on the shared store: its own log id, and both verify
    ids = {(folder.path / d / "audit.id").read_text() for d in (".", "audit-w1")}
    assert len(ids) == 2
    verified = _audit_verify(folder.path)
    assert verified.returncode == 0, verified.stderr
    assert "audit log audit-w1 OK" in verified.stdout
    again = start_agent(folder, env=TWO)  # a restart finds both logs where the store says
    try:
        health = _spread(again, None, lambda kv: kv.health()["audit"]["status"])
        assert health == ["ok"] * SPREAD  # both workers found their own log intact
    finally:
        again.stop()
    assert "new audit chain" not in (folder.path / "agent.log").read_text()


def test_workers_of_a_killed_supervisor_stop_and_free_the_folder(tmp_path: Path) -> None:
    folder = init_agent_dir(tmp_path / "agent", client_cert="required")
    running = start_agent(folder, env=TWO)
    workers = _children(running.proc.pid)
    running.proc.kill()
    running.proc.wait(10)
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)
    again = start_agent(folder, env=TWO)  # the folder is free again, and serves
    try:
        with again.client() as kv:
            assert kv.health()["audit"]["status"] == "ok"
    finally:
        again.stop()


def test_the_default_is_one_process_with_nothing_shared(agent_dir: AgentDir) -> None:
    running = start_agent(agent_dir)
    try:
        assert _children(running.proc.pid) == []  # no supervisor: the agent serves itself
        with running.client() as kv:
            kv.create("one/s", "v")
            assert kv.get("one/s")["value"] == "v"
        assert not (agent_dir.path / "workers.gen").exists()
        assert not list(agent_dir.path.glob("audit-w*"))
    finally:
        assert running.stop() == 0


def test_workers_above_one_are_refused_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    assert AgentSettings().workers == 1  # the default: one process, as always
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(ValidationError, match="more than one worker needs Linux"):
        AgentSettings(workers=2)
    assert AgentSettings(workers=1).workers == 1
