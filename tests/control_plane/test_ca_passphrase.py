"""A control plane started with the wrong CA-key passphrase says which setting to fix."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

CLI = (sys.executable, "-m", "apps.cli.main")


def _env(tmp_path: Path, passphrase: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    env.update(
        KEYVAULT_CP_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'cp.db'}",
        KEYVAULT_CP_CA_KEY_PASSPHRASE=passphrase,
        KEYVAULT_CP_PORT="0",
        KEYVAULT_CP_GATEWAY_PORT="0",
    )
    return env


def test_a_wrong_ca_passphrase_names_the_variable(tmp_path: Path) -> None:
    right = _env(tmp_path, "the-right-passphrase")
    subprocess.run([*CLI, "control-plane", "migrate"], env=right, check=True, capture_output=True)
    ready = tmp_path / "ready.json"
    first = subprocess.Popen(
        [*CLI, "control-plane", "run", "--ready-file", str(ready)],
        env=right,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert ready.exists(), "the control plane did not start"
    finally:
        first.terminate()
        first.wait(20)
    wrong = subprocess.run(
        [*CLI, "control-plane", "run"],
        env=_env(tmp_path, "a-wrong-passphrase"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 78, wrong.stderr  # configuration, as the README's table says
    lines = [ln for ln in wrong.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "KEYVAULT_CP_CA_KEY_PASSPHRASE" in lines[0], wrong.stderr
    assert "Traceback" not in wrong.stderr
