"""Rotation across crashes and replicas: kill -9 mid-rotation, two agents on one PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.assembly import Agent, key_source
from agent.keys import KeyManager
from agent.rotation.engine import RotationEngine
from agent.rotation.scheduler import Scheduler
from agent.secrets import SecretService
from agent.settings import load_agent_settings
from agent.store.db import Store
from agent.uplink import meta as uplink_meta
from agent.uplink import outbox
from tests.conftest import init_agent_dir, start_agent


def _policy(rotator: dict[str, Any]) -> dict[str, Any]:
    return {"version": "v1", "policies": [
        {"id": "pol_a", "name": "a", "version": 1,
         "body": {"selector": {"name_glob": "**"}, "interval_seconds": 3600,
                  "notice_seconds": 60, "rotator": rotator, "scope": {"all": True}}}]}  # fmt: skip


async def _seed(agent: Agent, rotator: dict[str, Any], count: int) -> list[str]:
    """``count`` secrets created two hours ago (due now) under one policy."""
    doc = _policy(rotator)
    await agent.store.write(lambda c: uplink_meta.put(c, uplink_meta.POLICIES, doc))
    ids = [(await agent.secrets.create(f"s/{i:04d}", f"old-{i}")).id for i in range(count)]
    past = (datetime.now().astimezone() - timedelta(hours=2)).astimezone().isoformat()
    await agent.store.write(lambda c: c.execute("UPDATE kv_secrets SET created_at = ?", (past,)))
    return ids


def _rotation_events(store: Store) -> list[dict[str, Any]]:
    rows = store.read_sync(lambda c: outbox.oldest(c, 100000))
    return [r.body for r in rows if r.kind == "rotation"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_stop_mid_rotation_keeps_the_old_value(tmp_path: Path, sig: int) -> None:
    folder = init_agent_dir(tmp_path / "agent")
    mark = tmp_path / "applying"
    script = (
        f'cat >/dev/null; if [ "$KEYVAULT_SECRET_VERSION" = 2 ]; then touch {mark}; sleep 60; fi'
    )
    config_file = folder.path / "agent.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["rotation"] = {
        "scan_interval_seconds": 0.2,
        "retry_base_seconds": 3600,
        "commands": {"slow": {"argv": ["/bin/sh", "-c", script], "timeout_seconds": 120}},
    }
    config_file.write_text(yaml.safe_dump(config))
    settings = load_agent_settings(None, folder.path)
    agent = Agent.open(settings)
    try:
        [sid] = asyncio.run(_seed(agent, {"type": "command", "settings": {"command": "slow"}}, 1))
    finally:
        agent.close()

    proc = start_agent(folder)
    try:
        deadline = time.monotonic() + 30
        while not mark.exists():
            assert time.monotonic() < deadline, (folder.path / "agent.log").read_text()[-2000:]
            time.sleep(0.05)
        started = time.monotonic()
        proc.stop(sig)
        assert time.monotonic() - started < 15  # within the shutdown timeout, command or not
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
    store = Store(settings.storage_url)
    try:
        pending = store.read_sync(
            lambda c: c.execute(
                "SELECT count(*) FROM kv_versions WHERE state = ?", ("pending",)
            ).scalar_one()
        )
        if sig == signal.SIGKILL:
            assert pending == 1  # the kill left the pending version behind
    finally:
        store.close()

    again = start_agent(folder)
    try:
        with again.client() as kv:
            deadline = time.monotonic() + 20
            store = Store(settings.storage_url)
            try:
                while True:
                    events = _rotation_events(store)
                    if events or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                assert len(events) == 1, events
                assert events[0]["outcome"] == "failed" and events[0]["reason"] == "interrupted"
                assert events[0]["secret_id"] == sid and events[0]["version"] == 1
                left = store.read_sync(
                    lambda c: c.execute("SELECT count(*) FROM kv_versions").scalar_one()
                )
                assert left == 1
            finally:
                store.close()
            secret = kv.get(sid)
            assert secret["value"] == "old-0" and secret["version"] == 1
    finally:
        again.stop()


def _replica(settings: Any, owner: str) -> tuple[Store, RotationEngine]:
    store = Store(settings.storage_url)
    keys = KeyManager.unlock(store, key_source(settings))
    secrets = SecretService(store, keys, cache=False)
    return store, RotationEngine(secrets, settings.rotation, owner=owner)


async def test_two_replicas_on_postgres_rotate_each_due_secret_once(
    tmp_path: Path, pg_url: str
) -> None:
    folder = init_agent_dir(tmp_path / "agent", storage_url=pg_url)
    settings = load_agent_settings(None, folder.path, rotation={"jitter_fraction": 0})
    agent = await asyncio.to_thread(Agent.open, settings)
    try:
        ids = await _seed(agent, {"type": "random", "settings": {}}, 200)
    finally:
        await asyncio.to_thread(agent.close)
    a_store, a = await asyncio.to_thread(_replica, settings, "replica-a")
    b_store, b = await asyncio.to_thread(_replica, settings, "replica-b")
    try:
        sa, sb = Scheduler(a), Scheduler(b)
        await asyncio.gather(sa.run_pass(), sb.run_pass())
        assert sa.rotated + sb.rotated == 200 and sa.failed == sb.failed == 0
        assert sa.rotated > 0 and sb.rotated > 0  # both took part
        await asyncio.gather(sa.run_pass(), sb.run_pass())  # nothing is due any more
        assert sa.rotated + sb.rotated == 200

        def versions(c: Any) -> dict[str, int]:
            rows = c.execute(
                "SELECT secret_id, count(*) FROM kv_versions GROUP BY secret_id"
            ).fetchall()
            return {r[0]: r[1] for r in rows}

        counts = a_store.read_sync(versions)
        assert counts == {sid: 2 for sid in ids}
        events = _rotation_events(a_store)
        assert len(events) == 200 and {e["outcome"] for e in events} == {"ok"}
        assert sorted(e["secret_id"] for e in events) == sorted(ids)
    finally:
        await asyncio.to_thread(a_store.close)
        await asyncio.to_thread(b_store.close)


def test_two_agent_processes_on_one_postgres_rotate_each_due_secret_once(
    tmp_path: Path, pg_url: str
) -> None:
    import shutil

    folder = init_agent_dir(tmp_path / "a", storage_url=pg_url)
    config_file = folder.path / "agent.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["rotation"] = {"scan_interval_seconds": 0.2, "jitter_fraction": 0}
    config_file.write_text(yaml.safe_dump(config))
    settings = load_agent_settings(None, folder.path)
    agent = Agent.open(settings)
    try:
        ids = asyncio.run(_seed(agent, {"type": "random", "settings": {}}, 200))
    finally:
        agent.close()
    second = type(folder)(tmp_path / "b", folder.token)
    shutil.copytree(folder.path, second.path)  # same key and store, its own folder and audit log
    procs = [start_agent(folder), start_agent(second)]
    store = Store(settings.storage_url)
    try:
        deadline = time.monotonic() + 60
        while len(_rotation_events(store)) < 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # a few more passes on both: nothing may run twice
        events = _rotation_events(store)
        assert len(events) == 200 and {e["outcome"] for e in events} == {"ok"}
        assert sorted(e["secret_id"] for e in events) == sorted(ids)

        def versions(c: Any) -> dict[str, int]:
            rows = c.execute(
                "SELECT secret_id, count(*) FROM kv_versions GROUP BY secret_id"
            ).fetchall()
            return {r[0]: r[1] for r in rows}

        assert store.read_sync(versions) == {sid: 2 for sid in ids}
        per_agent = [
            sum(
                '"scheduler"' in line
                for line in (p.dir.path / "audit.log").read_text().splitlines()
            )
            for p in procs
        ]
        assert sum(per_agent) == 200 and min(per_agent) > 0, per_agent  # both took part
    finally:
        store.close()
        for p in procs:
            p.stop()
