"""A real new agent for the apps' enrollment tests: the command an enrollment screen shows,
run as written on the "new host" (its folder, plus the agent's data folder), then
``keyvault agent run`` as a real process that connects to the control plane's gateway over
mutual TLS."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from common.metadata_key import MetadataKey
from tests.conftest import AgentProcess, init_agent_dir, start_agent

#: heartbeats and reconnects fast enough for a test (as tests/e2e's agents use)
UPLINK_ENV = {
    "KEYVAULT_UPLINK__HEARTBEAT_INTERVAL": "1",
    "KEYVAULT_UPLINK__BACKOFF_BASE": "0.1",
    "KEYVAULT_UPLINK__BACKOFF_CAP": "1",
}


def enroll_and_run(folder: Path, command: str, metadata_key: MetadataKey) -> AgentProcess:
    """In ``folder`` (the new host): copy the metadata key where the command expects it,
    run the shown enroll ``command`` as written on a freshly initialised agent, start it."""
    agent_dir = init_agent_dir(folder / "agent")
    args = shlex.split(command)
    assert args[:3] == ["keyvault", "agent", "enroll"], command
    if "--metadata-key-file" in args:  # the screen's step: "copy the key file next to it"
        metadata_key.save(folder / args[args.index("--metadata-key-file") + 1])
    enrolled = subprocess.run(
        [sys.executable, "-m", "apps.cli.main", *args[1:], "--data-dir", str(agent_dir.path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=folder,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    return start_agent(agent_dir, env=UPLINK_ENV)
