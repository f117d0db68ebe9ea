"""What only a real Windows proves: msvcrt locks, binary file modes, NTFS ACLs, a real service.

Collected only on Windows (``tests/conftest.py`` ignores the file elsewhere; the skip mark stays
as a guard); ``.github/workflows/windows.yml`` runs them on ``windows-latest`` (``-m windows``). The simulated form of the portability checks runs on every
system: ``tests/deploy/test_windows_portability.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agent import platform

pytestmark = [
    pytest.mark.windows,
    pytest.mark.skipif(sys.platform != "win32", reason="needs real Windows (the Windows CI job)"),
]


def test_a_locked_file_refuses_a_second_lock_and_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "agent.lock"
    first = os.open(path, os.O_RDWR | os.O_CREAT | platform.OPEN_FLAGS, 0o600)
    second = os.open(path, os.O_RDWR | platform.OPEN_FLAGS)
    try:
        platform.pwrite(first, b"1234", 0)
        platform.lock_file(first)
        with pytest.raises(platform.LockedError):
            platform.lock_file(second)
        assert platform.pread(second, 32, 0) == b"1234"  # the locked byte is far from the data
    finally:
        os.close(first)
        os.close(second)
    third = os.open(path, os.O_RDWR | platform.OPEN_FLAGS)
    try:
        platform.lock_file(third)  # released when the holder closed its handle
    finally:
        os.close(third)


def test_files_are_binary_newlines_stay_one_byte(tmp_path: Path) -> None:
    path = tmp_path / "log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | platform.OPEN_FLAGS, 0o600)
    try:
        os.write(fd, b"a\nb\n")
        assert platform.pread(fd, 16, 0) == b"a\nb\n"
    finally:
        os.close(fd)
    assert path.read_bytes() == b"a\nb\n"


def test_restrict_acl_leaves_only_the_named_accounts(tmp_path: Path) -> None:
    import win32security

    folder = tmp_path / "data"
    folder.mkdir()
    me = os.environ["USERNAME"]
    platform.restrict_acl(folder, ("NT AUTHORITY\\SYSTEM", me, "BUILTIN\\Administrators"))
    sd = win32security.GetNamedSecurityInfo(
        str(folder), win32security.SE_FILE_OBJECT, win32security.DACL_SECURITY_INFORMATION
    )
    dacl = sd.GetSecurityDescriptorDacl()
    names = set()
    for i in range(dacl.GetAceCount()):
        sid = dacl.GetAce(i)[2]
        names.add(win32security.LookupAccountSid(None, sid)[0].lower())
    assert names == {"system", me.lower(), "administrators"}
    control, _revision = sd.GetSecurityDescriptorControl()
    assert control & win32security.SE_DACL_PROTECTED
    (folder / "inside.txt").write_text("still ours")  # we keep access through our entry
    assert (folder / "inside.txt").read_text() == "still ours"
