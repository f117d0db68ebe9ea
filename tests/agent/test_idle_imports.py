"""What a running, idle agent has imported: none of the heavy modules it does not need.

Each module kept off ``keyvault agent run``'s path is idle RSS saved (docs/performance.md, "Issue
18, round 3: memory"); an innocent top-level import elsewhere would bring it back without any
other test noticing. So a real agent is started in a child process (both entry points: the
``keyvault`` command and the single binary's), serves secrets over mutual TLS, and then reports
its ``sys.modules``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import AgentDir, AgentProcess, init_agent_dir

ROOT = Path(__file__).resolve().parents[2]

# Loaded only by the code that needs them: certificates are made or parsed by enrollment,
# renewal and `init` (common.pki), PyJWT by JWT login, SQLAlchemy and Alembic by a migration only
# (the store runs plain SQL on sqlite3 or psycopg), Jinja2 by templates, httpx and the other
# commands by the CLI, multiprocessing by the rotation policy worker and `workers: N`. pydantic
# never: the agent's settings are common.typedconf's (only the control plane's are pydantic).
NOT_AT_IDLE = (
    "common.pki",
    "cryptography.x509",
    "cryptography.hazmat.primitives.asymmetric",
    "cryptography.hazmat.primitives.serialization",
    "agent.uplink.enroll",
    "agent.provision",
    "jwt",
    "sqlalchemy",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.orm",
    "alembic",
    "jinja2",
    "httpx",
    "multiprocessing",
    "control_plane",
    "apps.cli.secrets_cmd",
    "apps.core",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
)

# The child runs the entry point in its main thread; a helper thread waits for the go file
# (written once the test has made its reads), then writes the loaded modules' names.
CHILD = """
import json, sys, threading, time
from pathlib import Path

go, out, entry = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def report():
    while not go.exists():
        time.sleep(0.05)
    out.write_text(json.dumps(sorted(sys.modules)))

threading.Thread(target=report, daemon=True).start()
sys.argv = [entry, *sys.argv[4:]]
if entry == "keyvault":
    from apps.cli.main import main
    main()
else:
    import runpy
    runpy.run_path(entry, run_name="__main__")
"""

ENTRIES = {
    "keyvault agent run": ("keyvault", "agent", "run"),
    "single binary run": (str(ROOT / "deploy" / "binary" / "entry.py"), "run"),
}


def _start(folder: AgentDir, tmp: Path, argv: tuple[str, ...]) -> tuple[AgentProcess, Path, Path]:
    url_file = folder.path / "agent.url"
    go, out = tmp / "go", tmp / "modules.json"
    log = open(tmp / "agent.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(go), str(out), *argv, "--data-dir", str(folder.path)],
        stdout=log,
        stderr=log,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while not (url_file.exists() and url_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the agent did not start: {(tmp / 'agent.log').read_text()[-2000:]}")
        time.sleep(0.05)
    return AgentProcess(folder, proc, url_file.read_text().strip()), go, out


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_an_idle_agent_has_not_loaded_what_it_does_not_use(tmp_path: Path, entry: str) -> None:
    folder = init_agent_dir(tmp_path / "agent", client_cert="required")
    running, go, out = _start(folder, tmp_path, ENTRIES[entry])
    try:
        with running.client() as kv:
            created = kv.create("idle/check", "a value")
            for _ in range(3):
                assert kv.get(created["id"])["value"] == "a value"
        go.touch()
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        loaded = json.loads(out.read_text())
    finally:
        assert running.stop(signal.SIGTERM) == 0
    assert "agent.serve" in loaded  # the report came from a serving agent
    unwanted = [m for m in loaded if any(m == u or m.startswith(u + ".") for u in NOT_AT_IDLE)]
    assert unwanted == []
