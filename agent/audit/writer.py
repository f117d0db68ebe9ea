"""Writing the audit log: :class:`AuditLog` appends entries and keeps the head in step."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from types import TracebackType
from typing import Any

from agent import platform
from agent.audit._format import (
    HEAD_NAME,
    HEAD_SIZE,
    LOG_NAME,
    MAX_HEAD_LAG,
    MAX_LINE,
    MIN_KEY_BYTES,
    _Bad,
    _BadMac,
    _canonical,
    _entry_ok,
    _head_record,
    _json,
    _Mac,
    _parse_entry,
    _parse_head,
    _tail,
)
from agent.crypto import Clock, utcnow
from common.errors import IntegrityError, UnavailableError
from common.eventloop import running_loop

_log = logging.getLogger("agent.audit")  # the name the log had before the split


_fsync_dir = platform.fsync_dir
_make_private = platform.make_private_fd


def _pwrite_all(fd: int, data: bytes) -> None:
    written = platform.pwrite(fd, data, 0)
    if written != len(data):
        raise OSError(errno.EIO, f"short write to the head file ({written} of {len(data)} bytes)")


# --------------------------------------------------------------------------- writer


class AuditLog:
    """The append side of one audit folder; one process at a time (an exclusive lock).

    ``_fd`` is the log's file descriptor (``O_APPEND``). The fail-closed test swaps in a
    descriptor opened read-only so that a real ``write`` fails with ``EBADF``.
    """

    def __init__(
        self,
        folder: Path,
        mac_key: bytes,
        *,
        fsync: bool = False,
        clock: Clock = utcnow,
        on_append: Callable[[], None] | None = None,
    ) -> None:
        if len(mac_key) < MIN_KEY_BYTES:
            raise ValueError(f"the audit MAC key must be at least {MIN_KEY_BYTES} bytes")
        self.folder = Path(folder)
        self.log_path = self.folder / LOG_NAME
        self.head_path = self.folder / HEAD_NAME
        self.fsync = fsync
        self._mac = _Mac(bytes(mac_key))
        self._clock = clock
        self._on_append = on_append  # told after every acknowledged entry (the uplink's wake-up)
        self._second = -1  # the system clock's last whole second and its text, cached
        self._second_text = ""
        self._fd: int | None = None
        self._head_fd: int | None = None
        self._seq = 0
        self._last = ""  # mac of entry _seq
        self._head_seq = 0  # the entry audit.head names (trails _seq until the turn's end)
        self._head_due = False  # a head write is scheduled for the end of this loop turn
        self._size = 0  # bytes of acknowledged entries; a failed append is cut back to this
        self._dirty = False  # a failed append may have left bytes past _size or a stale head

    def __repr__(self) -> str:
        state = "open" if self._fd is not None else "closed"
        return (
            f"AuditLog(folder={str(self.folder)!r}, seq={self._seq}, fsync={self.fsync}, {state})"
        )

    def __enter__(self) -> AuditLog:
        return self.open()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def head(self) -> tuple[int, str]:
        """``(seq, mac_hex)`` of the last acknowledged entry; ``(0, "")`` for an empty log."""
        return self._seq, self._last

    def intact(self) -> bool:
        """Whether the log on disk is still the file this writer appends to, and not shorter
        than what it acknowledged (False once it was removed, replaced or cut under us)."""
        if self._fd is None:
            return True
        try:
            on_disk = os.stat(self.log_path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self._fd)
        same = (on_disk.st_ino, on_disk.st_dev) == (mine.st_ino, mine.st_dev)
        return same and on_disk.st_size >= self._size

    # open / close ----------------------------------------------------------
    def open(self) -> AuditLog:
        """Create the files (0600) or recover the chain's end from the log's tail and the head.

        A torn last line (a write cut off by a crash, never acknowledged) is cut away, and a
        head one entry behind the log (killed between the two writes) is brought forward.
        Anything else that does not fit raises: a MAC failure ``IntegrityError``, any other
        mismatch or OS failure ``UnavailableError``. Returns ``self``.
        """
        if self._fd is not None:
            return self
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(
                self.log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | platform.OPEN_FLAGS, 0o600
            )
        except OSError as exc:
            raise UnavailableError(
                f"the audit log {self.log_path} cannot be opened: {exc.strerror}"
            ) from exc
        try:
            self._lock(fd)
            self._recover(fd)
        except OSError as exc:
            self._abandon(fd)
            raise UnavailableError(
                f"the audit log {self.log_path} cannot be opened: {exc.strerror}"
            ) from exc
        except BaseException:
            self._abandon(fd)
            raise
        self._fd = fd
        return self

    def close(self) -> None:
        """Bring the head up to date, close the files and release the lock; idempotent."""
        self.flush_head()
        for fd in (self._fd, self._head_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._head_fd = None

    def _abandon(self, fd: int) -> None:
        self._fd = fd
        self.close()

    def _lock(self, fd: int) -> None:
        try:
            platform.lock_file(fd)
        except platform.LockedError:
            raise UnavailableError(
                f"the audit log {self.log_path} is in use by another process "
                "(one agent per audit folder)"
            ) from None

    def _refuse(self, reason: str) -> UnavailableError:
        return UnavailableError(
            f"the audit log in {self.folder} cannot be used: {reason}; run "
            "`keyvault agent audit verify` to see what is wrong, or move audit.log and "
            "audit.head aside to start a new chain"
        )

    def _recover(self, fd: int) -> None:
        _make_private(fd)
        size = os.fstat(fd).st_size
        try:
            last_raw, end = _tail(fd, size)
        except _Bad as exc:
            raise self._refuse(str(exc)) from None
        head = self._open_head(has_entries=last_raw is not None)
        seq, last, prev = 0, "", ""
        if last_raw is not None:
            seq, last, prev = self._check_last(last_raw)
        if head == (seq, last):
            pass
        elif (head[0] == seq - 1 and head[1] == prev) or (
            seq - MAX_HEAD_LAG <= head[0] < seq and self._reaches(fd, end, head)
        ):  # killed before the head caught up: bring it forward
            _pwrite_all(self._require_head(), _head_record(self._mac, seq, last))
        elif head[0] > seq:
            raise self._refuse(
                f"its head says entry {head[0]} but the log ends at {seq} (truncated)"
            )
        else:
            raise self._refuse(f"its last entry is {seq} but its head says entry {head[0]}")
        if end < size:
            _log.warning(
                "audit log %s: cutting away a torn last line of %d bytes (a write cut off "
                "by a crash; it was never acknowledged)",
                self.log_path,
                size - end,
            )
            os.ftruncate(fd, end)
        self._seq, self._last, self._size, self._dirty = seq, last, end, False
        self._head_seq = seq

    def _reaches(self, fd: int, end: int, head: tuple[int, str]) -> bool:
        """Whether the entries after the one ``head`` names (at most ``MAX_HEAD_LAG``, the
        most a kill can leave unnamed) each verify and chain back to exactly that entry."""
        start = max(0, end - (MAX_HEAD_LAG + 2) * MAX_LINE)
        lines = platform.pread(fd, end - start, start).split(b"\n")[:-1]
        if start > 0:
            lines = lines[1:]  # the first piece may be the end of a longer line
        want_seq, want_mac = None, None
        for raw in reversed(lines):
            try:
                entry = _parse_entry(raw)
            except _Bad:
                return False
            if not _entry_ok(self._mac, entry, raw):
                return False
            if want_seq is not None and (entry["seq"], entry["mac"]) != (want_seq, want_mac):
                return False
            if entry["seq"] == head[0]:
                return bool(entry["mac"] == head[1])
            want_seq, want_mac = entry["seq"] - 1, entry["prev"]
        return head == (0, "") and start == 0 and want_seq == 0 and want_mac == ""

    def _check_last(self, raw: bytes) -> tuple[int, str, str]:
        try:
            entry = _parse_entry(raw)
        except _Bad as exc:
            raise self._refuse(f"its last line is damaged: {exc}") from None
        if not _entry_ok(self._mac, entry, raw):
            raise IntegrityError(
                f"the audit log's last entry (seq {entry['seq']}) fails its MAC check: the key "
                "is not the one it was written with, or the log was edited; run "
                "`keyvault agent audit verify`"
            )
        return entry["seq"], entry["mac"], entry["prev"]

    def _open_head(self, *, has_entries: bool) -> tuple[int, str]:
        try:
            self._head_fd = os.open(self.head_path, os.O_RDWR | platform.OPEN_FLAGS)
        except FileNotFoundError:
            if has_entries:
                raise self._refuse(
                    "its head file audit.head is missing, so a cut-off tail cannot be ruled out"
                ) from None
            self._head_fd = self._create_head()
        _make_private(self._head_fd)
        raw = platform.pread(self._head_fd, HEAD_SIZE + 1, 0)
        try:
            return _parse_head(raw, self._mac)
        except _BadMac:
            raise IntegrityError(
                "the audit head file fails its MAC check: the key is not the one the log was "
                "written with, or the head was edited"
            ) from None
        except _Bad as exc:
            raise self._refuse(f"its head file audit.head is garbled ({exc})") from None

    def _create_head(self) -> int:
        """Write the empty log's head atomically (temp file, fsync, rename)."""
        tmp = self.folder / f"{HEAD_NAME}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | platform.OPEN_FLAGS, 0o600)
        try:
            _pwrite_all(fd, _head_record(self._mac, 0, ""))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.head_path)
        _fsync_dir(self.folder)
        return os.open(self.head_path, os.O_RDWR | platform.OPEN_FLAGS)

    def _require_head(self) -> int:
        if self._head_fd is None:
            raise OSError(errno.EBADF, "the audit head file is not open")
        return self._head_fd

    # append ----------------------------------------------------------------
    def _now(self) -> str:
        """The entry time, ISO-8601 UTC with microseconds.

        With the default clock the system time is read directly and the date part is
        formatted once per second (the same text ``utcnow().isoformat()`` gives, faster).
        """
        if self._clock is not utcnow:
            t = self._clock()
            return (t if t.tzinfo is UTC else t.astimezone(UTC)).isoformat(timespec="microseconds")
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{micro:06d}+00:00"

    def append(
        self,
        *,
        op: str,
        outcome: str,
        status: int,
        actor: str | None = None,
        target: str | None = None,
        remote: str | None = None,
        request_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> int:
        """Write one entry and move the head to it; returns its seq.

        Raises ``UnavailableError`` when the entry cannot be written (the request must then be
        refused), leaving ``head`` where it was and cutting back anything half-written. An
        ``extra`` that is not a small dict of JSON values is a programming error
        (``TypeError``/``ValueError``), raised before anything is written.
        """
        seq = self._seq + 1
        more = ""
        if extra is not None:
            if not isinstance(extra, dict):
                raise TypeError("audit `extra` must be a dict of JSON values")
            more = f'"extra":{_canonical(extra)},'
        when = self._now()
        body = (  # the canonical JSON of the entry, written out: keys in sorted order
            f'{{"actor":{_json(actor)},{more}"op":{_quote(op)},"outcome":{_quote(outcome)},'
            f'"prev":"{self._last}","remote":{_json(remote)},"request_id":{_json(request_id)},'
            f'"seq":{seq},"status":{int(status)},"target":{_json(target)},"time":"{when}"}}'
        )
        mac = self._mac.hex(f"{self._last}\n{body}".encode("ascii"))
        data = f'{body[:-1]},"mac":"{mac}"}}\n'.encode("ascii")
        if len(data) > MAX_LINE:
            raise ValueError(
                f"audit entry of {len(data):,} bytes is over the {MAX_LINE:,}-byte limit; "
                "keep `extra` small"
            )
        loop = running_loop()
        later = loop is not None and seq - self._head_seq < MAX_HEAD_LAG
        try:
            self._write(data, None if later else _head_record(self._mac, seq, mac))
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._repair()
            raise UnavailableError(
                f"the audit log cannot be written: {exc.strerror or exc}; "
                "requests are refused until it can"
            ) from exc
        self._seq, self._last, self._size = seq, mac, self._size + len(data)
        if not later:
            self._head_seq = seq
        elif not self._head_due and loop is not None:
            self._head_due = True
            loop.call_soon(self.flush_head)  # once per loop turn, however many entries
        if self._on_append is not None:
            self._on_append()
        return seq

    def flush_head(self) -> None:
        """Rewrite the head for the newest entry if it trails (the per-turn write that
        :meth:`append` schedules inside an event loop). A failure is logged and leaves the
        log marked for repair: the next append rewrites the head first, or is refused."""
        self._head_due = False
        if self._head_seq == self._seq or self._head_fd is None:
            return
        try:
            _pwrite_all(self._head_fd, _head_record(self._mac, self._seq, self._last))
            if self.fsync:
                os.fdatasync(self._head_fd)
        except OSError as exc:
            self._dirty = True
            _log.error("the audit head file could not be written: %s", exc.strerror or exc)
            return
        self._head_seq = self._seq

    def _write(self, line: bytes, head: bytes | None) -> None:
        """The entry's line, then (unless deferred: ``None``) the head naming it."""
        fd, head_fd = self._fd, self._head_fd
        if fd is None or head_fd is None:
            raise OSError(errno.EBADF, "the audit log is not open")
        if self._dirty:
            self._repair()
        self._dirty = True
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(errno.EIO, f"short write ({written} of {len(line)} bytes)")
        if self.fsync:
            os.fdatasync(fd)
        if head is not None:
            _pwrite_all(head_fd, head)
            if self.fsync:
                os.fdatasync(head_fd)
        self._dirty = False

    def _repair(self) -> None:
        """Cut the log back to its acknowledged end and rewrite the head to match."""
        if self._fd is None or self._head_fd is None:
            raise OSError(errno.EBADF, "the audit log is not open")
        os.ftruncate(self._fd, self._size)
        _pwrite_all(self._head_fd, _head_record(self._mac, self._seq, self._last))
        self._dirty = False
        self._head_seq = self._seq


# --------------------------------------------------------------------------- readers
