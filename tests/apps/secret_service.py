"""A real, private freedesktop Secret Service for tests: its own D-Bus session bus and an
unlocked GNOME Keyring, all state in a temporary folder, both processes ours to stop."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

SECRETS_BUS_NAME = "org.freedesktop.secrets"
KEYRING_PASSWORD = b"test-keyring-password"


class MissingTool(RuntimeError):
    """dbus-daemon or gnome-keyring-daemon is not installed."""


def _stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait_for_name(address: str, daemon: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until the keyring daemon owns org.freedesktop.secrets (asking never activates it)."""
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection

    deadline = time.monotonic() + timeout
    with open_dbus_connection(address) as conn:
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise RuntimeError(f"gnome-keyring-daemon exited with {daemon.returncode}")
            reply = conn.send_and_get_reply(message_bus.NameHasOwner(SECRETS_BUS_NAME))
            if reply.body[0]:
                return
            time.sleep(0.02)
    raise RuntimeError("gnome-keyring-daemon did not register the Secret Service in time")


def _activation(root: Path, data_home: Path, daemon: str) -> None:
    """Make the private bus start *our* keyring daemon (unlocked, same files) when asked for
    the Secret Service and none runs, as a desktop session starts one again after a crash.

    gnome-keyring-daemon aborts on a known race when a short-lived client disconnects while a
    property read is still queued (``invoke_get_property_in_idle_cb: assertion failed``).
    Without this file the bus would activate the system's ``gnome-keyring-daemon --start``,
    locked with no way to unlock it here; the session's own service directory comes first."""
    script = root / "keyring-daemon.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"printf %s '{KEYRING_PASSWORD.decode()}' | "
        f"exec '{daemon}' --foreground --unlock --components=secrets\n",
        encoding="utf-8",
    )
    script.chmod(0o700)
    services = data_home / "dbus-1" / "services"
    services.mkdir(parents=True, exist_ok=True)
    (services / f"{SECRETS_BUS_NAME}.service").write_text(
        f"[D-BUS Service]\nName={SECRETS_BUS_NAME}\nExec={script}\n", encoding="utf-8"
    )


def _stop_activated(runtime_dir: Path) -> None:
    """Stop keyring daemons the bus started for this session (found by their environment)."""
    mark = f"XDG_RUNTIME_DIR={runtime_dir}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"gnome-keyring" not in (proc / "cmdline").read_bytes():
                continue
            if mark not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            os.kill(int(proc.name), 15)
        except OSError:
            continue


@contextlib.contextmanager
def secret_service(root: Path, timeout: float = 15) -> Iterator[dict[str, str]]:
    """Start ``dbus-daemon --session`` and ``gnome-keyring-daemon --unlock --components=secrets``.

    Yields the environment the client side needs (``DBUS_SESSION_BUS_ADDRESS``, ``HOME``,
    ``XDG_DATA_HOME``, ``XDG_RUNTIME_DIR``, ``XDG_CONFIG_HOME``); stops both daemons after.
    """
    tools = {t: shutil.which(t) for t in ("dbus-daemon", "gnome-keyring-daemon")}
    missing = [t for t, path in tools.items() if path is None]
    if missing:
        raise MissingTool(
            f"{', '.join(missing)} not installed (apt-get install gnome-keyring dbus; "
            "scripts/test.sh does it)"
        )
    env = {
        "HOME": str(root / "home"),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_RUNTIME_DIR": str(root / "run"),
        "XDG_CONFIG_HOME": str(root / "config"),
    }
    for folder in env.values():
        Path(folder).mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(env["XDG_RUNTIME_DIR"], 0o700)
    _activation(root, Path(env["XDG_DATA_HOME"]), str(tools["gnome-keyring-daemon"]))
    full = {**os.environ, **env}
    full.pop("DBUS_SESSION_BUS_ADDRESS", None)
    log = open(root / "daemons.log", "ab")  # closed in the finally below
    bus = subprocess.Popen(
        [str(tools["dbus-daemon"]), "--session", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=log,
        env=full,
        text=True,
    )
    daemon: subprocess.Popen[bytes] | None = None
    try:
        assert bus.stdout is not None
        address = bus.stdout.readline().strip()
        if not address:
            raise RuntimeError(f"dbus-daemon exited with {bus.wait(5)}; see {root}/daemons.log")
        env["DBUS_SESSION_BUS_ADDRESS"] = full["DBUS_SESSION_BUS_ADDRESS"] = address
        daemon = subprocess.Popen(
            [
                str(tools["gnome-keyring-daemon"]),
                "--foreground",
                "--unlock",
                "--components=secrets",
            ],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=log,
            env=full,
        )
        assert daemon.stdin is not None
        daemon.stdin.write(KEYRING_PASSWORD)
        daemon.stdin.close()
        _wait_for_name(address, daemon, timeout)
        yield env
    finally:
        if daemon is not None:
            _stop(daemon)
        _stop_activated(Path(env["XDG_RUNTIME_DIR"]))
        _stop(bus)
        log.close()
