"""A simulated Windows, as our own modules see it (put this folder first on PYTHONPATH).

Python runs ``sitecustomize`` at start-up. This one wraps ``builtins.__import__`` so that an
import made *by a module of ours* (``agent``, ``common``, ``serverkit``, ``apps``) sees:

- ``fcntl``, ``pwd``, ``grp``, ``resource``, ``termios`` and ``uvloop``: not installed
  (``ModuleNotFoundError``), as on Windows;
- ``os`` without the POSIX-only names Windows lacks (``pread``, ``pwrite``, ``fchmod``,
  ``O_CLOEXEC``, ``O_NOFOLLOW``, ``getuid``, ``nice``, ``killpg`` …, see ``OS_MISSING``);
- ``signal`` without the POSIX-only signals (``SIGKILL``, ``SIGHUP``, ``SIGUSR1`` …);
- ``sys.platform == "win32"``;
- ``msvcrt`` with ``locking`` (emulated with ``flock``: one lock per open file, like a Windows
  handle's lock).

The standard library and third-party packages keep the real modules, so Python itself still
works. What this does not prove, and only the Windows CI job (``.github/workflows/windows.yml``)
does: the real ``msvcrt`` byte-range locks, ``O_BINARY``/``O_NOINHERIT``, the Proactor event
loop, NTFS ACLs, pywin32, and stdlib modules that behave differently on Windows.
"""

from __future__ import annotations

import builtins
import os
import signal
import sys
import types
from typing import Any

OURS = ("agent", "common", "serverkit", "apps")
BLOCKED = frozenset({"fcntl", "pwd", "grp", "resource", "termios", "uvloop"})
OS_MISSING = frozenset(
    {
        "pread",
        "pwrite",
        "preadv",
        "pwritev",
        "fchmod",
        "fchown",
        "chown",
        "lchown",
        "O_CLOEXEC",
        "O_NOFOLLOW",
        "O_DIRECTORY",
        "O_NONBLOCK",
        "getuid",
        "geteuid",
        "getgid",
        "getegid",
        "getgroups",
        "setsid",
        "getpgid",
        "killpg",
        "nice",
        "fork",
        "sync",
        "statvfs",
        "uname",
        "getloadavg",
        "sched_getaffinity",
        "mkfifo",
    }
)
SIGNAL_MISSING = frozenset(
    {"SIGKILL", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGCHLD", "SIGPIPE", "SIGQUIT", "SIGALRM"}
    | {"alarm", "setitimer", "pthread_kill", "pthread_sigmask", "siginterrupt"}
)


class _View(types.ModuleType):
    """A module as Windows would show it: some names gone, some replaced."""

    def __init__(self, real: types.ModuleType, missing: frozenset[str], **extra: Any) -> None:
        super().__init__(real.__name__, real.__doc__)
        object.__setattr__(self, "_sim_real", real)
        object.__setattr__(self, "_sim_missing", missing)
        for name, value in extra.items():
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        if name in self._sim_missing:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r} (Windows)")
        return getattr(self._sim_real, name)

    def __setattr__(self, name: str, value: Any) -> None:  # e.g. sys.stderr = …
        setattr(self._sim_real, name, value)

    def __dir__(self) -> list[str]:
        return [n for n in dir(self._sim_real) if n not in self._sim_missing]


def _fake_msvcrt() -> types.ModuleType:
    import fcntl

    mod = types.ModuleType("msvcrt", "simulated msvcrt: locking() only")
    mod.LK_UNLCK, mod.LK_LOCK, mod.LK_NBLCK = 0, 1, 2  # type: ignore[attr-defined]

    def locking(fd: int, mode: int, nbytes: int) -> None:
        if mode == mod.LK_UNLCK:  # type: ignore[attr-defined]
            fcntl.flock(fd, fcntl.LOCK_UN)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PermissionError(13, "Permission denied (locked)") from None

    mod.locking = locking  # type: ignore[attr-defined]
    return mod


VIEWS: dict[str, types.ModuleType] = {
    "os": _View(os, OS_MISSING),
    "sys": _View(sys, frozenset(), platform="win32"),
    "signal": _View(signal, SIGNAL_MISSING),
    "msvcrt": _fake_msvcrt(),
}
_real_import = builtins.__import__


def _is_ours(globals_: Any) -> bool:
    if not globals_:
        return False
    name = globals_.get("__name__") or ""
    if name == "__main__":  # python -m apps.cli.main
        spec = globals_.get("__spec__")
        name = getattr(spec, "name", "") or ""
    return name.split(".")[0] in OURS


def _import(
    name: str,
    globals: Any = None,
    locals: Any = None,
    fromlist: Any = (),
    level: int = 0,
) -> Any:
    if level == 0 and _is_ours(globals):
        top = name.partition(".")[0]
        if top in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (simulated Windows)", name=name)
        if top in VIEWS and (name == top or not fromlist):
            return VIEWS[top]
    return _real_import(name, globals, locals, fromlist, level)


builtins.__import__ = _import
os.environ.setdefault("USERNAME", "simulated")
