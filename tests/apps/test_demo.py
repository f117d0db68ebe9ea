"""``keyvault demo --headless`` as a real process: a control plane and two agents, set up once,
checked through the real APIs, stopped cleanly, and reused on the next start."""

from __future__ import annotations

import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.client import AgentClient
from common.cpclient import ControlPlaneClient

READY = "KeyVault demo is ready"
EMAIL = "demo@keyvault.local"
CLI = (sys.executable, "-m", "apps.cli.main")


def free_port_base() -> int:
    """The first of four consecutive free ports on 127.0.0.1, below the kernel's ephemeral
    range (32768 up on Linux): a port in it can be handed to another test's port-0 socket
    between this check and the demo binding it."""
    for _ in range(200):
        base = random.randrange(20000, 32700)
        try:
            for port in range(base, base + 4):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no four consecutive free ports")


@dataclass
class Demo:
    """A running ``keyvault demo --headless`` and what it printed."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)

    def read_until(self, text: str, timeout: float) -> str:
        """Collect output until a line holds ``text``; fail with the output so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            if text in line:
                return "".join(self.output)
        raise AssertionError(f"no {text!r} within {timeout} s:\n{''.join(self.output)}")

    def value(self, label: str) -> str:
        """The value printed after ``label:``."""
        found = re.search(rf"{label}:\s+(\S+)", "".join(self.output))
        assert found, f"no {label} in the output"
        return found.group(1)

    def child_pids(self) -> list[int]:
        """The demo's child processes (control plane and agents)."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()]

    def interrupt(self) -> str:
        """Ctrl+C; returns all output once it exits (within 20 s, status 0)."""
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(20) == 0, "".join(self.output)
        self.read_until("demo stopped.", 5)
        return "".join(self.output)


StartDemo = Callable[[Path, int, dict[str, str]], Demo]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def run_demo() -> Iterator[StartDemo]:
    """Factory: start the demo on a folder and port base with an environment; kill leftovers."""
    started: list[Demo] = []

    def start(folder: Path, base: int, env: dict[str, str]) -> Demo:
        args = ["demo", "--headless", "--dir", str(folder), "--port-base", str(base)]
        proc = subprocess.Popen(
            [*CLI, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            # Ctrl+C as a terminal sends it: a test command started in the background by a
            # non-interactive shell (`… &`) ignores SIGINT, and a child inherits that, so
            # Python would never turn it into KeyboardInterrupt
            preexec_fn=_default_sigint,
        )
        demo = Demo(proc)
        assert proc.stdout is not None
        out = proc.stdout
        threading.Thread(target=lambda: list(map(demo.lines.put, out)), daemon=True).start()
        started.append(demo)
        demo.read_until(READY, 60)
        return demo

    yield start
    for demo in started:
        if demo.proc.poll() is None:
            demo.proc.send_signal(signal.SIGTERM)
            demo.proc.wait(30)


def gone(pid: int) -> bool:
    """True once a process no longer runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_online(cp: ControlPlaneClient, names: set[str]) -> dict[str, str]:
    """Poll until the named vaults are online; name → vault id."""
    deadline = time.monotonic() + 30
    vaults: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        vaults = list(cp.iter_vaults())
        online = {str(v["name"]): str(v["id"]) for v in vaults if v["status"] == "online"}
        if names <= set(online):
            return online
        time.sleep(0.2)
    raise AssertionError(f"vaults not online: {vaults}")


def vault_ids(folder: Path) -> dict[str, str]:
    """Agent name → vault id from each agent's enrollment state."""
    return {
        name: json.loads((folder / "agents" / name / "uplink" / "state.json").read_text())[
            "vault_id"
        ]
        for name in ("payments-prod", "web-staging")
    }


def check_control_plane(demo: Demo, folder: Path) -> str:
    """Log in with the printed password; both vaults online, sealed inventory, the policy."""
    from apps.core.labels import open_label
    from common import intents
    from common.metadata_key import MetadataKey

    ca_file = demo.value("control plane CA")
    assert demo.value("control plane API").startswith("https://127.0.0.1:")
    with ControlPlaneClient(demo.value("control plane API"), ca_file=ca_file) as cp:
        cp.token = cp.login(EMAIL, demo.value("operator password"))["token"]
        online = wait_online(cp, {"payments-prod", "web-staging"})
        assert online == vault_ids(folder)
        key = MetadataKey.load(folder / "metadata.key")
        vault = online["payments-prod"]
        deadline = time.monotonic() + 20
        while True:
            items = list(cp.iter_inventory(vault))
            if len(items) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert all(str(i["label"]).startswith("kvl1.") for i in items)
        opened = {open_label(key, vault, i["secret_id"], i["label"]).name: i for i in items}
        assert {"payments/api-key", "payments/db-password"} <= set(opened)
        policies = cp.list_policies()
        items_or_list = policies["items"] if isinstance(policies, dict) else policies
        # sealed: the control plane holds no selector; the operator's key opens it
        opened = [intents.IntentKeys(key).open(p["intent"]).body for p in items_or_list]
        assert [p["selector"]["name_glob"] for p in opened] == ["*/api-key"]
        assert all("selector" not in p for p in items_or_list)
        return vault


def check_saved_agent(folder: Path) -> None:
    """The demo saved the agent connection (profile + keyring token): read a secret with it."""
    from apps.core.agents import AgentDirectory
    from apps.core.keyring_store import CredentialStore

    directory = AgentDirectory(CredentialStore())
    profile = directory.get("payments-prod")
    tls = {k: getattr(profile, k) for k in ("ca_file", "cert_file", "key_file")}
    with AgentClient(profile.url, directory.token(profile), **tls) as kv:
        secret = kv.get("payments/api-key")
    assert str(secret["value"]).startswith("demo-payments-api-key-")
    assert secret["labels"] == {"env": "prod", "team": "payments"}


def test_demo_starts_everything_stops_cleanly_and_reuses_its_folder(
    keyring_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_demo: StartDemo,
) -> None:
    folder, base = tmp_path / "demo", free_port_base()
    start = run_demo
    demo = start(folder, base, dict(os.environ))
    out = "".join(demo.output)
    assert "(new)" in out and "memory only" not in out
    assert (folder / "owner.password").stat().st_mode & 0o777 == 0o600
    check_control_plane(demo, folder)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folder / "operator"))
    check_saved_agent(folder)
    pids = demo.child_pids()
    assert len(pids) == 3
    assert "demo stopped." in demo.interrupt()
    assert all(gone(pid) for pid in pids)

    ids = vault_ids(folder)
    again = start(folder, base, dict(os.environ))
    out = "".join(again.output)
    assert "(reusing it)" in out and "enrolling" not in out
    check_control_plane(again, folder)
    assert vault_ids(folder) == ids
    again.interrupt()


def test_demo_without_a_keyring_keeps_credentials_in_memory_and_says_so(
    no_keyring: None, tmp_path: Path, run_demo: StartDemo
) -> None:
    start = run_demo
    folder = tmp_path / "demo"
    demo = start(folder, free_port_base(), dict(os.environ))
    out = "".join(demo.output)
    assert "no OS keyring" in out
    assert "kept in memory only" in out
    assert "--memory-keyring" in out
    check_control_plane(demo, folder)
    pids = demo.child_pids()
    assert "demo stopped." in demo.interrupt()
    assert all(gone(pid) for pid in pids)


def test_demo_refuses_a_port_in_use(tmp_path: Path) -> None:
    base = free_port_base()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base))
        taken.listen()
        done = subprocess.run(
            [*CLI, "demo", "--headless", "--dir", str(tmp_path), "--port-base", str(base)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode != 0
    assert f"port {base} is in use; pass --port-base N" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def _agent_pid(demo: Demo, name: str) -> int:
    for pid in demo.child_pids():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"agent" in cmdline and any(arg.endswith(name.encode()) for arg in cmdline):
            return pid
    raise AssertionError(f"no agent {name} among the demo's children")


def _status(cp: ControlPlaneClient, vault_id: str, wanted: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = str(cp.get_vault(vault_id)["status"])
        if status == wanted:
            return
        time.sleep(0.3)
    raise AssertionError(f"vault {vault_id} is {status}, not {wanted}, after {timeout} s")


def test_demo_keeps_running_when_an_agent_dies_and_restarts_it_on_request(
    keyring_env: dict[str, str], tmp_path: Path, run_demo: StartDemo
) -> None:
    folder = tmp_path / "demo"
    demo = run_demo(folder, free_port_base(), dict(os.environ))
    vault = vault_ids(folder)["payments-prod"]
    victim = _agent_pid(demo, "payments-prod")
    os.kill(victim, signal.SIGKILL)
    demo.read_until("agent payments-prod stopped", 10)
    assert "--restart-agent payments-prod" in "".join(demo.output)
    with ControlPlaneClient(
        demo.value("control plane API"), ca_file=demo.value("control plane CA")
    ) as cp:
        cp.token = cp.login(EMAIL, demo.value("operator password"))["token"]
        _status(cp, vault, "offline", 60)  # the offline story, with the demo still running
        assert demo.proc.poll() is None
        asked = subprocess.run(
            [*CLI, "demo", "--dir", str(folder), "--restart-agent", "payments-prod"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert asked.returncode == 0, asked.stderr
        demo.read_until("agent payments-prod restarted on https://", 30)
        _status(cp, vault, "online", 30)
    assert _agent_pid(demo, "payments-prod") != victim
    pids = demo.child_pids()
    assert len(pids) == 3
    assert "demo stopped." in demo.interrupt()
    assert all(gone(pid) for pid in pids)
    assert not (folder / "demo.pid").exists()

    nobody = subprocess.run(
        [*CLI, "demo", "--dir", str(folder), "--restart-agent", "payments-prod"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert nobody.returncode == 1 and "no demo is running on" in nobody.stderr
