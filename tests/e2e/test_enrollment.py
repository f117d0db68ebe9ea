"""Enrollment and revocation against real control planes.

* An impostor control plane (another deployment, so another service CA) behind the URL: the
  agent aborts on the pin and the impostor never receives a registration (no token bytes).
* A used token and an expired token are refused with a clear message.
* A revoked vault is cut off and cannot reconnect; the agent says why.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import init_agent_dir
from tests.e2e.conftest import CLI, OWNER_EMAIL, ControlPlane, FleetAgent, enroll, wait_for


def _impostor(tmp_path: Path, env: dict[str, str]) -> ControlPlane:
    root = tmp_path / "impostor"
    root.mkdir()
    impostor_env = {
        **env,
        "KEYVAULT_CP_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'cp.db'}",
        "KEYVAULT_CP_CA_KEY_PASSPHRASE": uuid.uuid4().hex,
    }
    impostor_env.pop("KEYVAULT_CP_REDIS_URL", None)
    subprocess.run(
        [*CLI, "control-plane", "init", "--org", "Impostor", "--email", OWNER_EMAIL],
        env=impostor_env,
        check=True,
        capture_output=True,
    )
    cp = ControlPlane(root, impostor_env, "")
    cp.start_replica()
    return cp


def test_an_impostor_control_plane_gets_no_token_bytes(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    token = control_plane.enrollment_token()
    impostor = _impostor(tmp_path, control_plane.env)
    try:
        agent_dir = init_agent_dir(tmp_path / "agent")
        result = enroll(agent_dir, impostor.replicas[0].gateway_url, token)
        assert result.returncode != 0
        assert "pin" in result.stderr.lower(), result.stderr
        assert "Traceback" not in result.stderr
        assert not (agent_dir.path / "uplink" / "state.json").exists()
        metrics = impostor.api().get("/metrics").text  # sys.metrics needs no role
    finally:
        impostor.stop()
    register_lines = [
        line
        for line in metrics.splitlines()
        if "vaults.register" in line and not line.startswith("#") and not line.endswith(" 0")
    ]
    assert not register_lines, register_lines
    secret_part = token.split(".")[0].encode()
    assert secret_part not in impostor.logs()
    assert secret_part not in (impostor.root / "cp.db").read_bytes()

    # the genuine control plane still accepts the untouched token
    ok = enroll(agent_dir, control_plane.replicas[0].gateway_url, token)
    assert ok.returncode == 0, ok.stderr


def test_used_and_expired_tokens_are_refused(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp = control_plane
    gateway = cp.replicas[0].gateway_url
    expiring = cp.enrollment_token(ttl=10)
    made = time.monotonic()
    token = cp.enrollment_token()
    assert enroll(init_agent_dir(tmp_path / "first"), gateway, token).returncode == 0
    again = enroll(init_agent_dir(tmp_path / "second"), gateway, token)
    assert again.returncode != 0
    assert "token" in again.stderr.lower() and "Traceback" not in again.stderr

    time.sleep(max(0.0, 11.0 - (time.monotonic() - made)))  # past the token's 10 s life
    late = enroll(init_agent_dir(tmp_path / "late"), gateway, expiring)
    assert late.returncode != 0
    assert "token" in late.stderr.lower() and "Traceback" not in late.stderr


def test_a_revoked_vault_cannot_reconnect(control_plane: ControlPlane, make_agent: Any) -> None:
    cp = control_plane
    agent: FleetAgent = make_agent(cp, "doomed")
    agent.start()
    vault_id = agent.vault_id
    wait_for(lambda: agent.health()["uplink"]["state"] == "connected", 30, "the uplink")
    with cp.api() as c:
        c.post(f"/vaults/{vault_id}/revoke").raise_for_status()
    wait_for(lambda: agent.health()["uplink"]["state"] == "revoked", 30, "the agent to see it")
    assert "revoked" in str(agent.health()["uplink"]["last_error"]).lower()

    agent.stop()
    agent.start()  # a fresh process dials again and is refused again
    wait_for(lambda: agent.health()["uplink"]["state"] == "revoked", 30, "refusal after restart")
    with cp.api() as c:
        before = c.get(f"/vaults/{vault_id}").json()
        time.sleep(2.5)
        after = c.get(f"/vaults/{vault_id}").json()
    assert before["status"] == after["status"] == "revoked"
    assert before["last_heartbeat_at"] == after["last_heartbeat_at"]
    # the local API keeps serving
    assert agent.proc is not None
    with agent.proc.client() as c:
        c.create("still/served", value="yes")
