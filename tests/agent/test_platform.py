"""agent/platform.py on this system: locks, positional I/O and permissions behave as before."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import platform


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | platform.OPEN_FLAGS, 0o600)


def test_a_second_lock_on_the_same_file_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first, second = _open(tmp_path / "l"), _open(tmp_path / "l")
    try:
        platform.lock_file(first)
        with pytest.raises(platform.LockedError):
            platform.lock_file(second)
        os.close(first)
        platform.lock_file(second)
    finally:
        os.close(second)


def test_positional_io_with_and_without_pread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fd = _open(tmp_path / "f")
    try:
        assert platform.pwrite(fd, b"hello world", 0) == 11
        assert platform.pread(fd, 5, 6) == b"world"
        monkeypatch.delattr(os, "pread")  # the seek + read path Windows takes
        monkeypatch.delattr(os, "pwrite")
        assert platform.pwrite(fd, b"W", 6) == 1
        assert platform.pread(fd, 11, 0) == b"hello World"
    finally:
        os.close(fd)


def test_files_are_tightened_to_0600_and_not_inherited(tmp_path: Path) -> None:
    path = tmp_path / "p"
    path.write_bytes(b"x")
    path.chmod(0o644)
    fd = os.open(path, os.O_RDWR | platform.OPEN_FLAGS)
    try:
        platform.make_private_fd(fd)
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)


def test_users_and_root() -> None:
    me = platform.current_user_name()
    account = platform.lookup_user(me)
    assert account is not None and account.uid == os.geteuid()
    assert platform.lookup_user("no-such-user-kv") is None
    assert platform.is_root() == (os.geteuid() == 0)


def test_kill_group_ends_a_child_in_its_own_session() -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.executable, "
            "'-c', 'import time; time.sleep(60)']); time.sleep(60)",
        ],
        start_new_session=True,
    )
    time.sleep(0.3)
    platform.kill_group(child.pid)
    assert child.wait(10) != 0
    platform.kill_group(child.pid)  # already gone: no error
