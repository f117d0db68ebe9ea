"""The uplink in real ``keyvault agent run`` processes: an enrollment made while the agent runs
is picked up, ``kill -9`` loses no queued event, and SIGTERM closes a live socket in time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from agent.audit import iter_entries
from tests.agent.conftest import FAST_UPLINK_ENV, enroll_dir
from tests.agent.fake_gateway import FakeGateway, wait_for
from tests.conftest import AgentProcess, init_agent_dir, start_agent

CLI = [sys.executable, "-m", "apps.cli.main"]


def _health(running: AgentProcess) -> dict:
    with running.client() as c:
        return dict(c.health())


def test_an_enrollment_made_while_the_agent_runs_is_picked_up(
    tmp_path: Path, gateway: FakeGateway
) -> None:
    folder = init_agent_dir(tmp_path / "agent")
    running = start_agent(folder, env=FAST_UPLINK_ENV)
    try:
        assert _health(running)["uplink"]["state"] == "not_enrolled"
        with running.client() as c:
            made = c.create("before/enrollment", value="v")
        done = subprocess.run(
            [*CLI, "agent", "enroll", "--data-dir", str(folder.path),
             "--control-plane", gateway.url, "--token", gateway.token(), "--name", "live"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        wait_for(lambda: _health(running)["uplink"]["state"] == "connected", 20, "connected")
        wait_for(
            lambda: (
                made["id"]
                in [
                    e["data"]["secret_id"]
                    for e in gateway.accepted["outbox"]
                    if e["kind"] == "inventory"
                ]
            ),
            20,
            "the resync",
        )
        status = subprocess.run(
            [*CLI, "agent", "status", "--data-dir", str(folder.path)],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "KEYVAULT_TOKEN": folder.token},
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        uplink = json.loads(status.stdout)["uplink"]
        assert uplink["state"] == "connected" and uplink["vault_id"].startswith("vlt_")
        started = time.monotonic()
        assert running.stop(signal.SIGTERM, timeout=20) == 0
        assert time.monotonic() - started < 10
        wait_for(lambda: not gateway.sessions, 5, "the socket closed")
    finally:
        if running.proc.poll() is None:
            running.proc.kill()


def _latest(gateway: FakeGateway) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for e in gateway.accepted["outbox"]:
        if e["kind"] == "inventory":
            latest[e["data"]["secret_id"]] = e["data"]
    return latest


def test_kill_9_loses_no_queued_event(tmp_path: Path, gateway: FakeGateway) -> None:
    folder = init_agent_dir(tmp_path / "agent")
    enroll_dir(folder, gateway)
    gateway.auto_ack = False  # batches arrive but are never acknowledged before the kill
    running = start_agent(folder, env=FAST_UPLINK_ENV)
    try:
        with running.client() as c:
            ids = [c.create(f"k9/{i}", value=f"value {i}")["id"] for i in range(30)]
            c.update(ids[0], value="second")
            c.delete(ids[1])
        wait_for(lambda: gateway.held_frames(), 20, "a batch in flight")
        running.proc.kill()
        running.proc.wait(30)
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
    head = max(e["seq"] for e in iter_entries(folder.path))
    assert gateway.accepted["outbox"] == [] and gateway.accepted["audit"] == []

    gateway.auto_ack = True
    again = start_agent(folder, env=FAST_UPLINK_ENV)
    try:
        wait_for(lambda: set(ids) <= set(_latest(gateway)), 30, "every secret's inventory")
        wait_for(
            lambda: {e["seq"] for e in gateway.accepted["audit"]} >= set(range(1, head + 1)),
            30,
            "every audit entry written before the kill",
        )
        latest = _latest(gateway)
        assert latest[ids[0]]["version"] == 2
        assert latest[ids[1]]["deleted_at"] is not None
        assert any(e["kind"] == "inventory_sync" for e in gateway.accepted["outbox"])
        wait_for(lambda: _health(again)["uplink"]["outbox_depth"] == 0, 30, "an empty outbox")
    finally:
        again.stop()
