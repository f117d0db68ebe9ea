"""``keyvault agent install-service``: the hardened unit, checked by systemd's own analyzer."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import agent_group
from agent.service import agent_command, stop_timeout
from agent.service.systemd import UnitOptions, quote, render_unit
from common.client import AgentClient
from common.errors import ConfigError
from tests.conftest import AgentDir, init_agent_dir, need_service

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "MemoryDenyWriteExecute": "yes",
    "LockPersonality": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
    "Restart": "on-failure",
    "Type": "notify",
    "NotifyAccess": "main",
    "WatchdogSec": "30",
}


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def _me() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture
def agent(tmp_path: Path) -> AgentDir:
    """An initialised agent folder with a space in its path (quoting is exercised)."""
    return init_agent_dir(tmp_path / "data dir")


def test_dry_run_prints_a_hardened_unit(agent: AgentDir) -> None:
    out = CliRunner().invoke(
        agent_group, ["install-service", "--dry-run", "--data-dir", str(agent.path)]
    )
    assert out.exit_code == 0, out.output
    unit = _directives(out.output)
    for key, value in HARDENING.items():
        assert unit.get(key) == [value], key
    data = str(agent.path.resolve())
    assert unit["ReadWritePaths"] == [f'"{data}"']
    assert unit["WorkingDirectory"] == [data]
    assert unit["User"] == ["keyvault"] and unit["Group"] == ["keyvault"]
    assert unit["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert unit["TimeoutStopSec"] == [str(stop_timeout(10.0))]
    assert unit["ExecStart"][0].endswith(f'keyvault agent run --data-dir "{data}"')
    assert not any(agent.path.rglob("*.service"))


def test_stop_timeout_follows_the_agents_shutdown_budget(
    agent: AgentDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYVAULT_SHUTDOWN_TIMEOUT", "42.5")
    out = CliRunner().invoke(
        agent_group, ["install-service", "--dry-run", "--data-dir", str(agent.path)]
    )
    assert _directives(out.output)["TimeoutStopSec"] == ["53"]  # ceil(42.5) + 10


def test_a_data_dir_under_home_keeps_home_read_only() -> None:
    unit = _directives(render_unit(UnitOptions(["/usr/bin/keyvault"], Path("/home/ops/kv"))))
    assert unit["ProtectHome"] == ["read-only"]
    assert unit["ReadWritePaths"] == ["/home/ops/kv"]


def test_nothing_can_add_lines_to_the_unit() -> None:
    with pytest.raises(ConfigError, match="valid system user"):
        render_unit(UnitOptions(["/bin/kv"], Path("/srv/kv"), user="kv\nExecStartPre=/bin/sh"))
    with pytest.raises(ConfigError, match="line breaks"):
        render_unit(UnitOptions(["/bin/kv"], Path("/srv/kv\nUser=root")))


def test_quoting_for_unit_files() -> None:
    assert quote("/var/lib/keyvault") == "/var/lib/keyvault"
    assert quote("/srv/my vault") == '"/srv/my vault"'
    assert quote("50%") == "50%%"
    assert quote('a"b\\c') == '"a\\"b\\\\c"'


def test_the_binary_runs_itself_without_the_agent_word(tmp_path: Path) -> None:
    exe = str(tmp_path / "keyvault-agent")
    assert agent_command(tmp_path, frozen=True, executable=exe) == [
        exe,
        "run",
        "--data-dir",
        str(tmp_path.resolve()),
    ]


def test_install_refuses_a_folder_without_an_agent(tmp_path: Path) -> None:
    out = CliRunner().invoke(
        agent_group,
        ["install-service", "--data-dir", str(tmp_path), "--unit-dir", str(tmp_path / "units")],
    )
    assert out.exit_code == 78
    assert "keyvault agent init --data-dir" in out.output
    assert not (tmp_path / "units").exists()


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        need_service("systemd-analyze", FileNotFoundError("not on PATH"))
    assert tool is not None
    return tool


def _install(agent: AgentDir, units: Path) -> Path:
    out = CliRunner().invoke(
        agent_group,
        [
            "install-service",
            "--data-dir",
            str(agent.path),
            "--user",
            _me(),
            "--unit-dir",
            str(units),
        ],
    )
    assert out.exit_code == 0, out.output
    unit = units / "keyvault-agent.service"
    assert f"wrote {unit}" in out.output
    return unit


def test_systemd_analyze_verify_accepts_the_unit(agent: AgentDir, tmp_path: Path) -> None:
    tool = _analyze()
    unit = _install(agent, tmp_path / "units")
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    done = subprocess.run(
        [tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    ours = [ln for ln in (done.stdout + done.stderr).splitlines() if "keyvault-agent" in ln]
    assert done.returncode == 0 and ours == [], done.stdout + done.stderr

    # the same check notices a broken directive, so the pass above means something
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHome=sometimes"))
    bad = subprocess.run(
        [tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "ProtectHome" in bad.stdout + bad.stderr or "protect home" in bad.stderr


def test_systemd_analyze_security_rates_the_unit_ok(agent: AgentDir, tmp_path: Path) -> None:
    tool = _analyze()
    unit = _install(agent, tmp_path / "units")
    done = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for keyvault-agent\.service: ([\d.]+)", done.stdout)
    assert match, done.stdout[-1500:] + done.stderr
    assert float(match[1]) <= 2.0  # systemd rates < 2 as "OK" (10 = fully exposed)


MDWE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0 or libc.prctl(66, 0, 0, 0, 0) != 1:  # PR_SET/GET_MDWE
    sys.exit(99)
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_the_agent_serves_under_memory_deny_write_execute(agent: AgentDir) -> None:
    """MemoryDenyWriteExecute=yes is safe: the real agent runs with the kernel's W^X lock."""
    url_file = agent.path / "agent.url"
    argv = [sys.executable, "-c", MDWE, sys.executable, "-m", "apps.cli.main", "agent", "run"]
    with open(agent.path / "agent.log", "ab") as log:
        proc = subprocess.Popen([*argv, "--data-dir", str(agent.path)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not url_file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() == 99:
            need_service("prctl(PR_SET_MDWE) (Linux 6.3 or later)", OSError("not supported"))
        assert url_file.exists(), (agent.path / "agent.log").read_text()[-2000:]
        tls = agent.tls
        with AgentClient(
            url_file.read_text().strip(),
            agent.token,
            ca_file=tls / "ca.crt",
            cert_file=tls / "client.crt",
            key_file=tls / "client.key",
        ) as kv:
            kv.create("mdwe/check", "value-under-wx-lock")
            assert kv.get("mdwe/check")["value"] == "value-under-wx-lock"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
