"""The agent without POSIX: every module imports and the agent serves (issue 20).

On Linux and macOS the child processes run under ``tests/winsim/sitecustomize.py``: our modules
see no ``fcntl``/``pwd``/``grp``/``resource``/``termios``/``uvloop``, an ``os`` without
``pread``/``pwrite``/``fchmod``/``O_CLOEXEC``/``getuid``…, and ``sys.platform == "win32"``
(that file's docstring says exactly what it covers). On Windows the same tests run for real,
without the simulation (``.github/workflows/windows.yml`` selects them with ``-m windows``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.client import AgentClient

pytestmark = pytest.mark.windows
ROOT = Path(__file__).resolve().parents[2]
WINSIM = ROOT / "tests" / "winsim"
REAL_WINDOWS = sys.platform == "win32"
ONLY_FOR_ALEMBIC = {"agent.store.migrations.env"}  # executed by Alembic, not importable alone

WALK = """
import importlib, json, pkgutil, sys
mods, failed = [], []
for pkg in ("agent", "common", "serverkit", "apps.cli"):
    root = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(root.__path__, pkg + "."):
        if info.name in SKIP:
            continue
        mods.append(info.name)
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failed.append(f"{info.name}: {type(exc).__name__}: {exc}")
import agent.platform as p
print(json.dumps({"modules": mods, "failed": failed, "windows": p.WINDOWS,
                  "loaded": sorted(m for m in ("fcntl", "pwd", "grp", "resource", "termios")
                                   if m in sys.modules)}))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    if not REAL_WINDOWS:
        env["PYTHONPATH"] = os.pathsep.join([str(WINSIM), str(ROOT)])
    return env


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=ROOT,
    )


def test_the_simulation_hides_posix_from_our_modules_only() -> None:
    """The harness itself: our view has no fcntl or pread; the stdlib's still works."""
    if REAL_WINDOWS:
        pytest.skip("the simulation is for POSIX hosts")
    code = (
        "import agent.platform as p, subprocess, tempfile\n"
        "try:\n    import agent.hardening, sys\nexcept Exception as e:\n    raise SystemExit(e)\n"
        "print(p.WINDOWS, hasattr(p.os, 'pread'), hasattr(p.os, 'O_CLOEXEC'), p.sys.platform)\n"
        "print(subprocess.run(['true']).returncode, bool(tempfile.mkdtemp()))\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", "False", "win32", "0", "True"]
    blocked = _python("import agent.service.windows as w\nexec('import fcntl', w.__dict__)")
    assert "No module named 'fcntl' (simulated Windows)" in blocked.stderr


def test_every_agent_module_imports_without_posix() -> None:
    done = _python(f"SKIP = {ONLY_FOR_ALEMBIC!r}\n{WALK}")
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    report = json.loads(done.stdout)
    assert report["failed"] == []
    assert report["windows"] is True
    assert len(report["modules"]) > 100  # the walk found the packages (116 at the time of writing)
    assert {"agent.serve", "agent.assembly", "agent.audit.writer", "agent.uplink.enroll"} <= set(
        report["modules"]
    )
    assert {"agent.service.systemd", "agent.service.windows", "apps.cli.main"} <= set(
        report["modules"]
    )


def test_the_agent_initialises_and_serves_over_mutual_tls_without_posix(tmp_path: Path) -> None:
    """init, run on a free port, one read over mutual TLS, a graceful stop: all without POSIX."""
    data = tmp_path / "data"
    env = _env()
    cli = [sys.executable, "-m", "apps.cli.main", "agent"]
    init = subprocess.run(
        [
            *cli,
            "init",
            "--data-dir",
            str(data),
            "--key-file",
            str(tmp_path / "master.key"),
            "--port",
            "0",
            "--token-file",
            str(tmp_path / "admin.token"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert init.returncode == 0, init.stderr[-3000:]
    token = (tmp_path / "admin.token").read_text().strip()
    log = open(tmp_path / "agent.log", "wb")
    proc = subprocess.Popen(
        [*cli, "run", "--data-dir", str(data)],
        stdout=log,
        stderr=log,
        env=env,
        cwd=ROOT,
    )
    try:
        url_file = data / "agent.url"
        deadline = time.monotonic() + 60
        while not url_file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert url_file.exists(), (tmp_path / "agent.log").read_text()[-3000:]
        tls = data / "tls"
        with AgentClient(
            url_file.read_text().strip(),
            token,
            ca_file=tls / "ca.crt",
            cert_file=tls / "client.crt",
            key_file=tls / "client.key",
        ) as kv:
            kv.create("win/check", "served-without-posix")
            assert kv.get("win/check")["value"] == "served-without-posix"
        with pytest.raises(Exception, match=r"certificate|handshake|alert"):
            with AgentClient(url_file.read_text().strip(), token, ca_file=tls / "ca.crt") as bare:
                bare.get("win/check")  # mutual TLS really is required
    finally:
        if REAL_WINDOWS:
            proc.terminate()  # no SIGTERM on Windows; the service's graceful stop is tested apart
        elif proc.poll() is None:
            proc.send_signal(15)
        code = proc.wait(30)
        log.close()
    text = (tmp_path / "agent.log").read_text()
    if not REAL_WINDOWS:
        assert code == 0, text[-3000:]
        assert "agent stopped" in text
    assert "Traceback" not in text
    verify = subprocess.run(
        [*cli, "audit", "verify", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


POSIX_MODULES = {"fcntl", "pwd", "grp", "resource", "termios", "msvcrt"}
POSIX_OS_CALLS = {
    "pread",
    "pwrite",
    "fchmod",
    "fchown",
    "O_CLOEXEC",
    "O_NOFOLLOW",
    "getuid",
    "geteuid",
    "getgid",
    "killpg",
    "nice",
    "setsid",
    "getpgid",
}
# the one home of OS-specific code; and the systemd unit installer, which only runs on Linux
ALLOWED = {"agent/platform.py": POSIX_MODULES | POSIX_OS_CALLS, "agent/service/systemd.py": set()}


def test_no_module_but_platform_imports_posix_modules_or_calls_posix_only_os() -> None:
    """A static guard for what the simulation cannot reach: imports inside functions that the
    start-up path never calls."""
    import ast

    found = []
    for package in ("agent", "common", "serverkit", "apps/cli"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            allowed = ALLOWED.get(rel, set())
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module.split(".")[0]]
                for name in names:
                    if name in POSIX_MODULES and name not in allowed:
                        found.append(f"{rel}:{node.lineno} imports {name}")
                if (
                    isinstance(node, ast.Attribute)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "os"
                    and node.attr in POSIX_OS_CALLS
                    and node.attr not in allowed
                ):
                    found.append(f"{rel}:{node.lineno} uses os.{node.attr}")
    assert found == []
