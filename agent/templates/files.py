"""Replacing a rendered file atomically: a reader sees the old file or the new one, never a part.

The new content goes to a private temporary file in the destination's folder (``O_EXCL``, mode
0600 until the content is complete), is flushed to disk, given its mode and owner, and renamed
over the destination; the folder is then flushed too, so the rename survives a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from agent.platform import fsync_dir, owner_ids, set_mode_fd, set_owner_fd


def digest(data: bytes) -> bytes:
    """The SHA-256 of a file's content (what the service compares, not the content)."""
    return hashlib.sha256(data).digest()


def current_digest(path: Path) -> bytes | None:
    """The digest of the file at ``path`` now, or None when there is none (or it is unreadable)."""
    try:
        return digest(path.read_bytes())
    except OSError:
        return None


def ids(owner: str | None, group: str | None) -> tuple[int, int]:
    """uid and gid for the rendered file (-1 leaves one unchanged)."""
    return owner_ids(owner, group)


def replace(path: Path, data: bytes, mode: int, uid: int = -1, gid: int = -1) -> None:
    """Write ``data`` to ``path`` atomically with ``mode`` and owner (raises ``OSError``)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            set_owner_fd(fd, uid, gid)
            set_mode_fd(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fix_mode(path: Path, mode: int, uid: int = -1, gid: int = -1) -> None:
    """Give an already current file the configured mode and owner (raises ``OSError``)."""
    st = path.stat()
    if (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid):
        os.chown(path, uid, gid)
    if st.st_mode & 0o7777 != mode:
        os.chmod(path, mode)
