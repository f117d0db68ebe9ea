"""The agent's only operating-system-specific code: locks, positional I/O, permissions, users.

Every other agent module calls these instead of ``fcntl``, ``pwd``, ``resource`` or the POSIX-only
parts of ``os`` (``pread``, ``pwrite``, ``fchmod``, ``O_CLOEXEC``, ``getuid``, ``nice``,
``killpg``), so the agent imports and runs on Windows. Each function says what it does on each
system; POSIX behaviour is unchanged from before this module existed.

On Windows:

- file locks are ``msvcrt.locking`` on one byte at :data:`LOCK_OFFSET`, far past the data we
  read, because Windows byte-range locks are mandatory (a lock on byte 0 would block readers);
- positional reads and writes are seek + read/write under one process-wide lock;
- files are opened with ``O_NOINHERIT | O_BINARY`` (:data:`OPEN_FLAGS`: there is no
  ``O_CLOEXEC``, and text mode would turn a newline into two bytes);
- file modes are not used: a file is private through the ACL of its folder (SYSTEM, the service
  account and Administrators only, inheritance from above off: :func:`restrict_acl`,
  which imports pywin32's ``win32security`` only when called);
- there are no user ids, core-dump limits, nice levels or process groups.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

WINDOWS = sys.platform == "win32"

# what every ``os.open`` of ours adds to its access flags: not inherited by child processes
# (close-on-exec; ``O_NOINHERIT`` on Windows) and, on Windows, binary (no newline translation)
OPEN_FLAGS: int = (
    getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOINHERIT", 0) | getattr(os, "O_BINARY", 0)
)
O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)  # 0 where the system has none (Windows)
LOCK_OFFSET = 0x7FFF_FFF0  # Windows: the locked byte (below 2 GiB: the C runtime's limit)

_seek_lock = threading.Lock()


class LockedError(BlockingIOError):
    """Another process (or another open file) holds the lock."""


# ------------------------------------------------------------------ locks


def lock_file(fd: int) -> None:
    """Take an exclusive, non-blocking lock on an open file, or raise :class:`LockedError`.

    The lock lasts until the descriptor is closed (POSIX ``flock``; Windows ``msvcrt.locking``
    on one byte at :data:`LOCK_OFFSET`).
    """
    if WINDOWS:
        import msvcrt

        with _seek_lock:
            here = os.lseek(fd, 0, os.SEEK_CUR)
            os.lseek(fd, LOCK_OFFSET, os.SEEK_SET)
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            except OSError as exc:
                raise LockedError(str(exc)) from None
            finally:
                os.lseek(fd, here, os.SEEK_SET)
        return
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise LockedError(str(exc)) from None


# ------------------------------------------------------------------ positional I/O


def pread(fd: int, size: int, offset: int) -> bytes:
    """Read up to ``size`` bytes at ``offset`` (POSIX ``pread``; elsewhere seek + read)."""
    native = getattr(os, "pread", None)
    if native is not None:
        return native(fd, size, offset)
    with _seek_lock:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, size)


def pwrite(fd: int, data: bytes, offset: int) -> int:
    """Write ``data`` at ``offset``; returns the bytes written (POSIX ``pwrite``; else seek)."""
    native = getattr(os, "pwrite", None)
    if native is not None:
        return native(fd, data, offset)
    with _seek_lock:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX); Windows has no folder handle to sync."""
    if WINDOWS:
        return
    fd = os.open(folder, os.O_RDONLY | OPEN_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ permissions


def make_private_fd(fd: int) -> None:
    """Tighten an open file to 0600 when group or others have any bit (POSIX).

    On Windows a file's access comes from its folder's ACL (:func:`restrict_acl`).
    """
    fchmod = getattr(os, "fchmod", None)
    if fchmod is not None and os.fstat(fd).st_mode & 0o077:
        fchmod(fd, 0o600)


def set_mode_fd(fd: int, mode: int) -> None:
    """Give an open file ``mode`` (POSIX; on Windows the folder's ACL decides)."""
    fchmod = getattr(os, "fchmod", None)
    if fchmod is not None:
        fchmod(fd, mode)


def owner_ids(owner: str | None, group: str | None) -> tuple[int, int]:
    """The uid and gid a file should get (-1 leaves one unchanged); ``ValueError`` says why a
    name is unknown, or that owners are POSIX-only."""
    if owner is None and group is None:
        return -1, -1
    if WINDOWS:
        raise ValueError("owner and group are POSIX settings; on Windows the folder's ACL decides")
    import grp
    import pwd

    uid = gid = -1
    if owner is not None:
        try:
            uid = pwd.getpwuid(int(owner)).pw_uid if owner.isdigit() else pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise ValueError(f"owner {owner!r} is not a user on this machine") from None
    if group is not None:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"group {group!r} is not a group on this machine") from None
    return uid, gid


def check_ownership(owner: str | None, group: str | None) -> None:
    """An owner or group this process can give a file: it must exist, and only root may give a
    file away (``ValueError`` with the fix)."""
    uid, gid = owner_ids(owner, group)
    root = is_root()
    if uid != -1 and uid != effective_uid() and not root:
        raise ValueError(
            f"owner {owner!r}: only an agent running as root can give a file to another "
            "user; remove owner or run the agent as root"
        )
    if gid != -1 and not root and gid not in os.getgroups() and gid != os.getegid():
        raise ValueError(
            f"group {group!r}: the agent is not root and not in that group; remove group, "
            "add the agent's user to it or run the agent as root"
        )


def set_owner_fd(fd: int, uid: int, gid: int) -> None:
    """Give an open file ``uid``/``gid`` (-1 leaves one unchanged; a no-op on Windows)."""
    fchown = getattr(os, "fchown", None)
    if fchown is not None and (uid != -1 or gid != -1):
        fchown(fd, uid, gid)


def folder_acl_accounts(service_account: str) -> tuple[str, ...]:
    """Who may use the agent's data folder on Windows: SYSTEM, the service, Administrators."""
    return ("NT AUTHORITY\\SYSTEM", service_account, "BUILTIN\\Administrators")


def restrict_acl(path: Path, accounts: tuple[str, ...]) -> None:
    """Windows: replace the ACL of a folder (or file) with full control for ``accounts`` only.

    Inheritance from the parent is switched off (a protected DACL) and every entry is inherited
    by the files and folders inside, so files the agent creates are private to these accounts.
    Imports pywin32's ``win32security`` and ``ntsecuritycon``; call it only on Windows.
    """
    import ntsecuritycon
    import win32security

    dacl = win32security.ACL()
    inherit = ntsecuritycon.OBJECT_INHERIT_ACE | ntsecuritycon.CONTAINER_INHERIT_ACE
    for account in accounts:
        sid, _domain, _kind = win32security.LookupAccountName(None, account)
        dacl.AddAccessAllowedAceEx(
            win32security.ACL_REVISION_DS, inherit, ntsecuritycon.FILE_ALL_ACCESS, sid
        )
    win32security.SetNamedSecurityInfo(
        str(path),
        win32security.SE_FILE_OBJECT,
        win32security.DACL_SECURITY_INFORMATION | win32security.PROTECTED_DACL_SECURITY_INFORMATION,
        None,
        None,
        dacl,
        None,
    )


# ------------------------------------------------------------------ users and processes


@dataclass(frozen=True)
class Account:
    """A local POSIX account: its name, user id and group id."""

    name: str
    uid: int
    gid: int


def lookup_user(name: str) -> Account | None:
    """The POSIX account ``name``, or None when there is none (always None on Windows)."""
    if WINDOWS:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def current_user_name() -> str:
    """The name of the account this process runs as."""
    if WINDOWS:
        return os.environ.get("USERNAME", "unknown")
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def effective_uid() -> int | None:
    """This process's effective user id (None on Windows, which has none)."""
    geteuid = getattr(os, "geteuid", None)
    return None if geteuid is None else int(geteuid())


def is_root() -> bool:
    """True when running as POSIX root (never on Windows)."""
    return effective_uid() == 0


def disable_core_dumps() -> bool:
    """POSIX: core size limit 0; Linux also non-dumpable (no ptrace by peers). Windows: no-op.

    Returns False only when Linux refused to mark the process non-dumpable.
    """
    if WINDOWS:
        return True
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            return bool(libc.prctl(4, 0, 0, 0, 0) == 0)  # PR_SET_DUMPABLE, 0
    return True


def die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this process when its parent dies (a worker of a killed supervisor must
    not keep serving without the data folder's lock); exit at once if it already has."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        raise SystemExit(1)


def lower_priority() -> None:
    """The lowest CPU priority for this process (``nice 19``; nothing where there is no nice)."""
    nice = getattr(os, "nice", None)
    if nice is not None:
        with contextlib.suppress(OSError):
            nice(19)


def kill_group(pid: int) -> None:
    """Kill a child started in its own session and everything in it (Windows: the child)."""
    killpg = getattr(os, "killpg", None)
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        if killpg is not None:
            killpg(pid, signal.SIGKILL)  # type: ignore[attr-defined, unused-ignore]
        else:
            os.kill(pid, signal.SIGTERM)  # TerminateProcess on Windows
