"""Agent store migrations on a shared PostgreSQL store run once, under an advisory lock, even
when several replicas start at the same moment (docs/upgrading.md, "Version skew")."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import psycopg
import pytest

from agent.crypto import generate_key_file
from agent.provision import InitOptions, initialise
from agent.store.db import MIGRATION_LOCK_KEY, Store
from agent.store.migrations import HEAD_REVISION
from tests.conftest import AgentDir, start_agent

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]

RACE = """
import json, sys, time
from agent.store.db import Store
store = Store(sys.argv[1])
while time.time() < float(sys.argv[2]):  # start together
    time.sleep(0.001)
try:
    print(json.dumps({"migrated": store.migrate(), "revision": store.revision()}))
finally:
    store.close()
"""


def _psycopg(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_three_processes_migrating_an_empty_store_at_once_run_it_once(pg_url: str) -> None:
    start = f"{time.time() + 1.5:.3f}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, pg_url, start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["migrated"] for r in results) == [False, False, True]
    assert {r["revision"] for r in results} == {HEAD_REVISION}
    with psycopg.connect(_psycopg(pg_url)) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


def test_the_lock_is_the_advisory_lock_the_docs_name(pg_url: str) -> None:
    """While another session holds the key, a migration waits; it proceeds once released."""
    holder = psycopg.connect(_psycopg(pg_url), autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        proc = subprocess.Popen(
            [sys.executable, "-c", RACE, pg_url, "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        time.sleep(2.0)
        assert proc.poll() is None  # waiting for the lock
        store = Store(pg_url)
        try:
            assert store.revision() is None  # nothing was migrated behind the lock's back
        finally:
            store.close()
    finally:
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        holder.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"migrated": True, "revision": HEAD_REVISION}


def _downgrade(url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    store = Store(url)
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("agent.store") / "migrations"))
        with store.migration_connection() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)
    finally:
        store.close()


def test_two_replicas_starting_at_once_on_an_old_schema_both_come_up(
    tmp_path: Path, pg_url: str
) -> None:
    key = tmp_path / "master.key"
    generate_key_file(key)
    first = initialise(InitOptions(tmp_path / "a", key_file=key, storage_url=pg_url, port=0))
    initialise(InitOptions(tmp_path / "b", key_file=key, storage_url=pg_url, port=0, join=True))
    a_dir, b_dir = AgentDir(tmp_path / "a", first.admin_token), AgentDir(tmp_path / "b", "")
    a = start_agent(a_dir)
    try:
        with a.client() as kv:
            kv.create("app/db", "written-before-the-upgrade")
    finally:
        assert a.stop() == 0
    previous = f"{int(HEAD_REVISION) - 1:04d}"
    _downgrade(pg_url, previous)  # the store as the previous release left it

    import threading

    started: dict[str, object] = {}

    def run(name: str, folder: AgentDir) -> None:
        try:
            started[name] = start_agent(folder, timeout=60)
        except Exception as exc:
            started[name] = exc

    threads = [threading.Thread(target=run, args=(n, d)) for n, d in (("a", a_dir), ("b", b_dir))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    running = [p for p in started.values() if not isinstance(p, Exception)]
    try:
        assert len(running) == 2, started
        for proc, folder in zip(running, (a_dir, b_dir), strict=True):
            with proc.client(first.admin_token) as kv:  # type: ignore[attr-defined]
                assert kv.get("app/db")["value"] == "written-before-the-upgrade", folder
    finally:
        for proc in running:
            proc.stop()  # type: ignore[attr-defined]
    logs = [(d.path / "agent.log").read_text() for d in (a_dir, b_dir)]
    migrated = [
        log.count(f"store schema migrated from {previous} to {HEAD_REVISION}") for log in logs
    ]
    assert sum(migrated) == 1, logs  # once, by whichever replica took the lock first
    assert not any("Traceback" in log for log in logs)
    store = Store(pg_url)
    try:
        assert store.revision() == HEAD_REVISION
    finally:
        store.close()
