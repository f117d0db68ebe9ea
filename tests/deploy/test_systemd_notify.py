"""systemd integration for real: the notify protocol over a real datagram socket, the watchdog
petted from the event loop, the master key from a systemd credential, ProtectHome by location."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.service.notify import Notifier
from agent.service.systemd import KEY_CREDENTIAL, UnitOptions, render_unit
from tests.conftest import AgentDir, start_agent


class Listener:
    """A real AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, key: str, timeout: float = 30) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, fields in list(self.messages):
                if key in fields:
                    return fields
            time.sleep(0.02)
        raise AssertionError(f"no {key} in {self.messages}")

    def times(self, key: str) -> list[float]:
        return [t for t, fields in list(self.messages) if key in fields]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    # AF_UNIX paths are short (108 bytes): a folder of its own directly under /tmp, never a skip
    folder = Path(tempfile.mkdtemp(prefix="kvn-", dir="/tmp"))
    running = Listener(folder / "notify.sock")
    yield running
    running.close()
    shutil.rmtree(folder, ignore_errors=True)


def test_the_agent_reports_ready_pets_the_watchdog_and_says_stopping(
    agent_dir: AgentDir, listener: Listener
) -> None:
    env = {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "1000000"}  # 1 s
    running = start_agent(agent_dir, env=env)
    try:
        ready = listener.wait_for("READY")
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith("serving vault ") and running.url in ready["STATUS"]
        first = listener.messages[0][1]
        assert first == {"STATUS": "opening the store and the keys"}  # before READY
        with running.client() as kv:
            kv.create("sd/check", "v")
        time.sleep(2.2)
        pets = listener.times("WATCHDOG")
        assert len(pets) >= 4, listener.messages
        gaps = [b - a for a, b in itertools.pairwise(pets)]
        assert all(0.2 < gap < 1.0 for gap in gaps), gaps  # every 0.5 s, within the 1 s limit
    finally:
        code = running.stop(signal.SIGTERM)
    assert code == 0
    stopping = listener.wait_for("STOPPING", timeout=5)
    assert stopping == {"STOPPING": "1", "STATUS": "shutting down"}


def test_a_blocked_event_loop_stops_petting(listener: Listener) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "200000"})
    assert notifier.watchdog_seconds == 0.2

    async def main() -> tuple[float, float]:
        task = notifier.start_watchdog()
        await asyncio.sleep(0.35)
        began = time.monotonic()
        time.sleep(0.6)
        ended = time.monotonic()
        await asyncio.sleep(0.25)
        await Notifier.stop_watchdog(task)
        return began, ended

    began, ended = asyncio.run(main())
    time.sleep(0.1)
    pets = listener.times("WATCHDOG")
    # silence while hung (the first 0.2 s allow for a datagram sent just before, read late)
    assert [t for t in pets if began + 0.2 < t < ended - 0.02] == []
    assert len([t for t in pets if t < began]) >= 2 and [t for t in pets if t >= ended]


def test_abstract_sockets_watchdog_pid_and_no_socket() -> None:
    name = f"kv-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        assert Notifier({"NOTIFY_SOCKET": f"@{name}"}).status("a\nb")
        assert sock.recv(100) == b"STATUS=a b\n"  # one line, never a second field
    assert not Notifier({}).ready("x")  # not under systemd: nothing, no error
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_seconds is None
    mine = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_seconds == 1.0


def test_the_master_key_comes_from_the_systemd_credential(
    agent_dir: AgentDir, tmp_path: Path
) -> None:
    """The unit's LoadCredential= → $CREDENTIALS_DIRECTORY/<name>: the agent opens with it even
    though the key file agent.yaml names is gone."""
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    shutil.move(agent_dir.path / "master.key", creds / KEY_CREDENTIAL)
    env = {"CREDENTIALS_DIRECTORY": str(creds), "KEYVAULT_MASTER_KEY_CREDENTIAL": KEY_CREDENTIAL}
    running = start_agent(agent_dir, env=env)
    try:
        with running.client() as kv:
            kv.create("cred/check", "opened-with-the-credential")
            assert kv.get("cred/check")["value"] == "opened-with-the-credential"
    finally:
        assert running.stop() == 0


def test_a_credential_without_credentials_directory_is_one_line(agent_dir: AgentDir) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    env["KEYVAULT_MASTER_KEY_CREDENTIAL"] = KEY_CREDENTIAL
    done = subprocess.run(
        [sys.executable, "-m", "apps.cli.main", "agent", "run", "--data-dir", str(agent_dir.path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode != 0
    assert "CREDENTIALS_DIRECTORY is not set" in done.stderr
    assert "LoadCredential=keyvault-master.key:" in done.stderr
    assert "Traceback" not in done.stderr
    bad = {**env, "KEYVAULT_MASTER_KEY_CREDENTIAL": "../master.key"}
    done = subprocess.run(
        [sys.executable, "-m", "apps.cli.main", "agent", "run", "--data-dir", str(agent_dir.path)],
        capture_output=True,
        text=True,
        env=bad,
        timeout=60,
    )
    assert done.returncode != 0 and "master_key_credential" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def _unit(program: str, data: str, key: str | None = None) -> dict[str, str]:
    text = render_unit(
        UnitOptions([program, "run"], Path(data), key_file=Path(key) if key else None)
    )
    return {
        k: v for k, _, v in (ln.partition("=") for ln in text.splitlines()) if not k.startswith("#")
    }


def test_protect_home_follows_the_program_and_the_data() -> None:
    assert _unit("/usr/local/bin/keyvault-agent", "/var/lib/keyvault")["ProtectHome"] == "yes"
    # a program under a home folder: yes would hide it (203/EXEC at start)
    assert _unit("/home/ops/.local/bin/keyvault", "/var/lib/keyvault")["ProtectHome"] == "read-only"
    assert _unit("/root/venv/bin/keyvault", "/srv/kv")["ProtectHome"] == "read-only"
    assert _unit("/usr/bin/keyvault", "/home/ops/kv")["ProtectHome"] == "read-only"
    text = render_unit(UnitOptions(["/home/ops/kv/keyvault-agent"], Path("/srv/kv")))
    assert "# ProtectHome=read-only, not yes: the program" in text


def test_the_key_is_a_credential_and_the_binary_notifies_as_the_main_process() -> None:
    unit = _unit("/usr/bin/keyvault", "/srv/kv", key="/etc/keyvault/50% key")
    assert unit["LoadCredential"] == f"{KEY_CREDENTIAL}:/etc/keyvault/50%% key"  # literal path
    assert unit["Environment"] == f"KEYVAULT_MASTER_KEY_CREDENTIAL={KEY_CREDENTIAL}"
    assert "LoadCredential" not in _unit("/usr/bin/keyvault", "/srv/kv")  # a passphrase agent
    frozen = render_unit(
        UnitOptions(["/opt/kv/keyvault-agent", "run"], Path("/srv/kv"), frozen=True)
    )
    assert "NotifyAccess=main" in frozen  # the one-folder binary is the agent: no launcher
