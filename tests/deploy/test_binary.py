"""The agent binary (PyInstaller one-folder build): build it, then init, run, write, read and stop
through it; run it with a ``noexec`` TMPDIR and SIGKILL it; check the glibc floor the docs state."""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from common.client import AgentClient
from common.errors import UnavailableError
from tests.conftest import need_service

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
    folder_mb = sum(f.stat().st_size for f in binary.parent.rglob("*") if f.is_file()) / 1e6
    archive = next(binary.parent.parent.glob("keyvault-agent-*-linux-*.tar.gz"))
    with tarfile.open(archive) as tar:
        assert "keyvault-agent/keyvault-agent" in tar.getnames()
    size_mb = archive.stat().st_size / 1e6
    print(
        f"\nbinary folder {folder_mb:.1f} MB, tarball {size_mb:.1f} MB; "
        f"start → healthy median {statistics.median(starts):.2f} s"
    )
    assert size_mb < 80
    assert statistics.median(starts) < 10


def _binary_pids(binary: Path) -> list[int]:
    """Processes whose executable lives in the binary's folder (the agent and any worker)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            exe = (proc / "exe").resolve()
        except OSError:
            continue
        if proc.name.isdigit() and exe.is_relative_to(binary.parent.resolve()):
            found.append(int(proc.name))
    return found


def test_binary_runs_with_a_noexec_tmpdir_and_sigkill_leaves_nothing(
    binary: Path, tmp_path: Path
) -> None:
    """The CIS layout: TMPDIR on a tmpfs mounted noexec (in a private mount namespace, so no
    mount outlives the test). The agent inits, serves and answers over mutual TLS, writes nothing
    to TMPDIR; SIGKILL of the process we started ends the agent: no process, no temp folder."""
    if not shutil.which("unshare"):
        need_service("unshare (util-linux)", RuntimeError("not installed"))
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:  # not root: a user namespace may still allow the mount
        need_service("a private mount namespace", RuntimeError(probe.stderr.strip()))
    data, token_file, tmp = tmp_path / "data", tmp_path / "admin.token", tmp_path / "tmp"
    tmp.mkdir()
    script = (
        'mount -t tmpfs -o noexec,nosuid,nodev,size=64m tmpfs "$TMPDIR" || exit 97\n'
        'cp /bin/true "$TMPDIR/probe" && "$TMPDIR/probe" 2>/dev/null && exit 98\n'  # really noexec
        'rm -f "$TMPDIR/probe"\n'
        '"$BIN" init --data-dir "$DATA" --port 0 --token-file "$TOKEN" >/dev/null || exit 96\n'
        'exec "$BIN" run --data-dir "$DATA"\n'
    )
    env = {
        **os.environ,
        "TMPDIR": str(tmp),
        "BIN": str(binary),
        "DATA": str(data),
        "TOKEN": str(token_file),
    }
    log = tmp_path / "agent.log"
    with log.open("wb") as out:  # unshare and sh exec: the process we start becomes the agent
        proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while not (data / "agent.url").exists():
            assert proc.poll() is None, f"exit {proc.returncode}: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        mounts = Path(f"/proc/{proc.pid}/mountinfo").read_text()
        line = next(m for m in mounts.splitlines() if f" {tmp} " in m)
        assert "noexec" in line.split()[5], line  # the agent runs with its TMPDIR noexec
        while True:
            try:
                with _client(data, token_file.read_text().strip()) as kv:
                    kv.create("app/noexec", "noexec-canary")
                    assert kv.get("app/noexec")["value"] == "noexec-canary"
                break
            except UnavailableError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert Path(f"/proc/{proc.pid}/exe").resolve() == binary.resolve()
        seen_in_tmp = list(Path(f"/proc/{proc.pid}/root{tmp}").iterdir())
        assert seen_in_tmp == [], seen_in_tmp  # nothing unpacked into TMPDIR
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    deadline = time.monotonic() + 10
    while _binary_pids(binary) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _binary_pids(binary) == []  # no agent and no worker outlives the SIGKILL
    assert list(tmp.iterdir()) == []
    with pytest.raises(UnavailableError), _client(data) as kv:
        kv.health()


def glibc_floor(folder: Path) -> tuple[int, int]:
    """The newest GLIBC_x.y symbol version any ELF file in the build needs (objdump -T)."""
    newest = (2, 0)
    for path in folder.rglob("*"):
        if not path.is_file() or path.read_bytes()[:4] != b"\x7fELF":
            continue
        out = subprocess.run(["objdump", "-T", str(path)], capture_output=True, text=True).stdout
        for major, minor in re.findall(r"GLIBC_(\d+)\.(\d+)", out):
            newest = max(newest, (int(major), int(minor)))
    return newest


def test_the_glibc_floor_is_the_one_the_docs_state(binary: Path) -> None:
    if not shutil.which("objdump"):
        need_service("objdump (binutils)", RuntimeError("not installed"))
    major, minor = glibc_floor(binary.parent)
    docs = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    stated = re.search(r"glibc floor: \*\*(\d+)\.(\d+)\*\*", docs)
    assert stated, (
        "docs/deployment.md must state the binary's glibc floor as 'glibc floor: **x.y**'"
    )
    assert (int(stated[1]), int(stated[2])) == (major, minor), (
        f"the build needs glibc {major}.{minor}"
    )
