"""The single-file agent binary: build it, then init, run, write, read and stop through it."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.client import AgentClient
from common.errors import UnavailableError

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def binary() -> Path:
    """The binary, built once per source hash (reused from .cache/binary/ when unchanged)."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "deploy/binary/build.py"),
            "--cache",
            str(ROOT / ".cache/binary"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path.is_file() and os.access(path, os.X_OK)
    return path


def _client(data: Path, token: str | None = None) -> AgentClient:
    url = (data / "agent.url").read_text().strip()
    tls = data / "tls"
    return AgentClient(
        url,
        token,
        ca_file=tls / "ca.crt",
        cert_file=tls / "client.crt",
        key_file=tls / "client.key",
    )


def _start(binary: Path, data: Path) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``run``; return the process and seconds from spawn to a healthy answer over mTLS."""
    (data / "agent.url").unlink(missing_ok=True)
    began = time.monotonic()
    with open(data / "agent.log", "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([binary, "run", "--data-dir", str(data)], stdout=log, stderr=log)
    while time.monotonic() - began < 30:
        assert proc.poll() is None, (data / "agent.log").read_text()[-2000:]
        if (data / "agent.url").exists():
            try:
                with _client(data) as kv:
                    if kv.health()["status"] == "healthy":
                        return proc, time.monotonic() - began
            except UnavailableError:
                pass
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the binary's agent did not become healthy in 30 s")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(20)


def test_binary_inits_runs_serves_and_stops(binary: Path, tmp_path: Path) -> None:
    data, token_file = tmp_path / "data", tmp_path / "admin.token"
    init = subprocess.run(
        [binary, "init", "--data-dir", data, "--port", "0", "--token-file", token_file],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert init.returncode == 0, init.stderr
    assert (data / "store.db").is_file() and (data / "tls" / "client.crt").is_file()
    token = token_file.read_text().strip()

    proc, first = _start(binary, data)
    try:
        with _client(data, token) as kv:
            kv.create("app/db-password", "binary-canary-7f3e")
        read = subprocess.run(
            [
                binary,
                "secrets",
                "get",
                "app/db-password",
                "--data-dir",
                data,
                "--token-file",
                token_file,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert read.returncode == 0, read.stderr
        assert read.stdout.strip() == "binary-canary-7f3e"
    finally:
        code = _stop(proc)
    assert code == 0, (data / "agent.log").read_text()[-2000:]
    assert "agent stopped" in (data / "agent.log").read_text()

    starts = [first]
    for _ in range(2):  # restarts on the same folder: the lock was released, the store reopens
        proc, took = _start(binary, data)
        assert _stop(proc) == 0
        starts.append(took)
    size_mb = binary.stat().st_size / 1e6
    print(f"\nbinary {size_mb:.1f} MB; start → healthy median {statistics.median(starts):.2f} s")
    assert size_mb < 80
    assert statistics.median(starts) < 10
