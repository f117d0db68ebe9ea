"""Process and file hardening for the agent: no core dumps, private files, safe creation.

A core dump of the agent would hold the master key and every key-encryption key in clear, and a
file created with the default umask is readable by every local user. Everything here is
best-effort on platforms that lack the mechanism (Windows has no ``umask`` bits to speak of and
no ``prctl``), and exact on Linux.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from agent import platform
from common.errors import ConfigError

log = logging.getLogger("keyvault.agent")
PRIVATE_FILE = 0o600


def harden_process() -> None:
    """Files private by default (umask 077), core dumps off, not ptrace-attachable by peers."""
    os.umask(0o077)
    if not platform.disable_core_dumps():
        log.warning("could not mark the process non-dumpable (prctl)")


def create_private(path: Path, data: bytes) -> Path:
    """Write a new file readable by its owner only; refuse an existing file or a symlink.

    ``O_EXCL`` means an existing file (whatever its mode) is never reused and ``O_NOFOLLOW``
    that a planted symlink cannot redirect the write.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | platform.O_NOFOLLOW | platform.OPEN_FLAGS
    try:
        fd = os.open(path, flags, PRIVATE_FILE)
    except FileExistsError:
        raise ConfigError(
            f"{path} already exists; give a path that does not exist (it is never overwritten)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be created: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def publish_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once (temporary file + rename): a reader polling for the
    file (a supervisor waiting for ``agent.url``) sees no file or the whole file, never an empty
    one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def make_private(*paths: Path) -> None:
    """Tighten existing files to 0600 (a store made by an older version, or by another tool)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if not path.is_symlink() and path.stat().st_mode & 0o077:
                path.chmod(PRIVATE_FILE)


def make_private_tree(root: Path) -> None:
    """Folders 0700 and files 0600 under ``root`` (a backup, say)."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        root.chmod(0o700)
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        with contextlib.suppress(FileNotFoundError, PermissionError):
            path.chmod(0o700 if path.is_dir() else PRIVATE_FILE)
