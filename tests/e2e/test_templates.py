"""End to end, issue 17: a template follows a rotation made through the control plane.

A production-mode control plane (PostgreSQL + Redis) and an enrolled agent process over mutual
TLS whose ``agent.yaml`` names a template with a reload command. The secret is rotated by an
operator ``rotate`` command through the control plane: the file changes within 2 s, a reader
that reads the file in a tight loop the whole time never sees an empty or partial file, and the
reload command ran exactly once for the change. Before the secret exists the render fails: the
control plane receives one ``template_failed`` alert without a name or a path.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import ControlPlane, FleetAgent, wait_for
from tests.e2e.test_rotation import _create, _create_policy, _keyed_agent, _rotate, _served


def _alerts(cp: ControlPlane, kind: str) -> list[dict[str, Any]]:
    with cp.api() as c:
        r = c.get("/alerts", params={"limit": 500})
        r.raise_for_status()
        return [a for a in r.json()["items"] if a["kind"] == kind]


class Reader(threading.Thread):
    """Reads the file as fast as it can; keeps every distinct content it saw."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.seen, self.reads = path, set[bytes](), 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.seen.add(self.path.read_bytes())
            self.reads += 1


def test_template_follows_a_rotation_through_the_control_plane(
    control_plane: ControlPlane, make_agent: Any, tmp_path: Path
) -> None:
    cp = control_plane
    agent: FleetAgent = _keyed_agent(cp, make_agent, tmp_path, "templated")
    out, ran = tmp_path / "app", tmp_path / "reloads.txt"
    out.mkdir()
    hook = tmp_path / "reload.sh"
    hook.write_text(f"#!/bin/sh\necho reloaded >> {ran}\n")
    hook.chmod(0o755)
    dest = out / "app.env"
    config_path = agent.dir.path / "agent.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["templates"] = [
        {
            "name": "app",
            "inline": "# app settings\nDB_PASSWORD={{ secret('svc/db') }}\n" + "# pad\n" * 2000,
            "destination": str(dest),
            "on_change": {"command": [str(hook)]},
        }
    ]
    config_path.write_text(yaml.safe_dump(config))
    vault_id = agent.vault_id
    _create_policy(cp, vault_id, "svc/*", {"type": "random", "settings": {}})
    agent.start()

    [alert] = wait_for(lambda: _alerts(cp, "template_failed"), 30, "template_failed alert")
    assert "missing_secret" in alert["message"] and "#1" in alert["message"]
    assert "svc/db" not in alert["message"] and str(dest) not in alert["message"]
    assert not dest.exists()

    secret_id = _create(agent, "svc/db", "first-password")
    wait_for(lambda: dest.exists(), 5, "the first render")
    first = dest.read_bytes()
    assert b"DB_PASSWORD=first-password\n" in first
    assert dest.stat().st_mode & 0o777 == 0o600
    wait_for(lambda: ran.exists(), 5, "the first reload")
    assert ran.read_text() == "reloaded\n"

    reader = Reader(dest)
    reader.start()
    try:
        command_id = _rotate(cp, vault_id, secret_id, wait=False)
        new_value = wait_for(
            lambda: (v := _served(agent, secret_id))[1] == 2 and v[0], 30, "the rotation"
        )
        committed = time.monotonic()  # the agent served the new version: it had committed
        wait_for(lambda: new_value.encode() in dest.read_bytes(), 2, "the file within 2 s")
        latency = time.monotonic() - committed
        time.sleep(1.0)  # let a second (wrong) reload show itself
    finally:
        reader.stop.set()
        reader.join(5)
    second = dest.read_bytes()
    assert latency < 2
    assert reader.reads > 100
    assert reader.seen == {first, second}, sorted(len(s) for s in reader.seen)  # nothing partial
    assert ran.read_text() == "reloaded\n" * 2  # the rotation's change: exactly one more reload
    assert new_value != "first-password"
    wait_for(lambda: _command_state(cp, command_id) == "succeeded", 30, "the command finished")


def _command_state(cp: ControlPlane, command_id: str) -> str:
    with cp.api() as c:
        return str(c.get(f"/commands/{command_id}").json()["state"])
