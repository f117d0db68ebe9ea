"""A hardened systemd unit for the agent, and ``keyvault agent install-service``'s steps.

The unit is ``Type=notify`` with ``WatchdogSec=``: the agent reports readiness and pets the
watchdog from its event loop (:mod:`agent.service.notify`). A master key file is handed over
with ``LoadCredential=`` (systemd reads it as root and shows it to the service only, under
``$CREDENTIALS_DIRECTORY``), so the service account never needs read access to the key itself.
``ProtectHome=`` follows where the program, the data folder and the files it reads live.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agent import platform
from agent.service import stop_timeout
from common.errors import ConfigError, KeyVaultError

DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_DATA_DIR = Path("/var/lib/keyvault")
HOME_DIRS = (Path("/home"), Path("/root"), Path("/run/user"))
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
WATCHDOG_SECONDS = 30  # the agent pets every 15 s; a loop stuck for 30 s is restarted
KEY_CREDENTIAL = "keyvault-master.key"  # the credential's name inside $CREDENTIALS_DIRECTORY


@dataclass(frozen=True)
class UnitOptions:
    """What goes into the unit: the command, the folder it may write, the account it runs as."""

    command: list[str]
    data_dir: Path
    user: str = "keyvault"
    shutdown_timeout: float = 10.0
    read_paths: tuple[Path, ...] = field(default=())  # files it reads outside data_dir
    key_file: Path | None = None  # the master key, passed with LoadCredential= when set
    frozen: bool = False  # the single binary (one folder: the program is the agent itself)


def quote(arg: str) -> str:
    """Quote one word for a unit file (systemd's C-style quoting; ``%`` escaped)."""
    arg = arg.replace("%", "%%")
    if arg and not any(c in arg for c in " \t\"'\\;$"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def under_home(paths: Iterable[Path]) -> bool:
    """True when any path lies under /home, /root or /run/user (hidden by ProtectHome=yes)."""
    return any(p.resolve().is_relative_to(home) for p in paths for home in HOME_DIRS)


def protect_home(opts: UnitOptions) -> tuple[str, str]:
    """``ProtectHome=`` for where the program and files are, and the unit comment saying why.

    ``yes`` hides /home, /root and /run/user; a program there would fail with 203/EXEC and a
    data folder there would be missing. Then ``read-only`` keeps them visible but unwritable,
    and ``ReadWritePaths=`` still opens the data folder.
    """
    program = Path(opts.command[0])
    if under_home([program, opts.data_dir, *opts.read_paths]):
        why = (
            "# ProtectHome=read-only, not yes: the program, the data folder or a file it reads "
            "lies under\n# /home, /root or /run/user, which yes would hide (203/EXEC or a "
            "missing folder).\n"
        )
        return "read-only", why
    return (
        "yes",
        "# ProtectHome=yes: nothing the agent needs lies under /home, /root or /run/user.\n",
    )


def credential_lines(key_file: Path | None) -> str:
    """``LoadCredential=`` for the master key file and the setting that points the agent at it."""
    if key_file is None:
        return ""
    return (
        "# the master key: read by systemd as root, visible to this service only\n"
        # the rest of the line after "ID:" is the path, taken literally: no quotes (systemd 252
        # would keep them as part of the name), only % doubled (specifier expansion)
        f"LoadCredential={KEY_CREDENTIAL}:{str(key_file.resolve()).replace('%', '%%')}\n"
        f"Environment=KEYVAULT_MASTER_KEY_CREDENTIAL={KEY_CREDENTIAL}\n"
    )


UNIT_TEMPLATE = """\
[Unit]
Description=KeyVault agent ({workdir})
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess={notify_access}
WatchdogSec={watchdog}
ExecStart={exec_start}
User={user}
Group={user}
WorkingDirectory={workdir}
UMask=0077
Restart=on-failure
RestartSec=5
KillMode=mixed
TimeoutStopSec={stop_seconds}
LimitNOFILE=65536
{credential}
NoNewPrivileges=yes
ProtectSystem=strict
{protect_home_why}ProtectHome={protect_home}
ReadWritePaths={data}
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
KeyringMode=private
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""


def render_unit(opts: UnitOptions) -> str:
    """The unit file's text: a dedicated user, a read-only system and a minimal kernel surface."""
    data = opts.data_dir.resolve()
    if not USER_RE.fullmatch(opts.user):
        raise ConfigError(f"--user {opts.user!r} is not a valid system user name")
    words = [str(data), *opts.command, str(opts.key_file or "")]
    if any("\n" in word or "\r" in word for word in words):
        raise ConfigError("the data folder and program paths must not contain line breaks")
    home, why = protect_home(opts)
    return UNIT_TEMPLATE.format(
        notify_access="main",  # the one-folder binary is the agent itself: no launcher
        watchdog=WATCHDOG_SECONDS,
        credential=credential_lines(opts.key_file),
        protect_home_why=why,
        exec_start=" ".join(quote(a) for a in opts.command),
        user=opts.user,
        workdir=str(data).replace("%", "%%"),  # the rest of the line, unquoted
        stop_seconds=stop_timeout(opts.shutdown_timeout),
        protect_home=home,
        data=quote(str(data)),
    )


def ensure_user(name: str, home: Path) -> platform.Account:
    """The service account, created as a system user without login when missing (needs root)."""
    found = platform.lookup_user(name)
    if found is not None:
        return found
    if not platform.is_root():
        raise ConfigError(
            f"user {name!r} does not exist: run as root to create it, or pass --user <existing user>"
        )
    nologin = shutil.which("nologin") or "/usr/sbin/nologin"
    flags = ["--system", "--user-group", "--no-create-home", "--shell", nologin]
    run(["useradd", *flags, "--home-dir", str(home), name])
    created = platform.lookup_user(name)
    if created is None:
        raise KeyVaultError(f"useradd reported success but user {name!r} does not exist")
    return created


def own_data_dir(data_dir: Path, account: platform.Account) -> bool:
    """Give the data folder to the service account (as root); False if it could not."""
    if not platform.is_root():
        return data_dir.stat().st_uid == account.uid
    for folder, dirs, files in os.walk(data_dir):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chown(name, account.uid, account.gid, follow_symlinks=False)
    return True


def write_unit(text: str, unit_dir: Path, name: str) -> Path:
    """Write ``<unit_dir>/<name>.service`` (mode 0644)."""
    path = unit_dir / f"{name}.service"
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(0o644)
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path}: {exc.strerror}; run as root, or use --dry-run / --unit-dir"
        ) from None
    return path


def enable(name: str) -> None:
    """``systemctl daemon-reload`` then ``systemctl enable --now <name>``."""
    if shutil.which("systemctl") is None:
        raise ConfigError("systemctl is not on PATH: is this a systemd system?")
    run(["systemctl", "daemon-reload"])
    run(["systemctl", "enable", "--now", f"{name}.service"])


def run(argv: list[str]) -> None:
    """Run a system command; its failure becomes one line naming the command."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise KeyVaultError(f"cannot run {argv[0]}: {exc.strerror}") from None
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise KeyVaultError(
            f"`{' '.join(argv)}` failed ({done.returncode}): {reason[-1] if reason else 'no output'}"
        )
