"""The agent's local audit log: append-only, hash-chained with a keyed MAC, never a secret value.

One folder holds two files:

* ``audit.log`` -- JSON lines, one entry per API request, allowed or denied::

      {"actor":...,"extra":{...},"op":...,"outcome":...,"prev":"<hex>","remote":...,
       "request_id":...,"seq":N,"status":...,"target":...,"time":"...+00:00","mac":"<hex>"}

  ``mac = HMAC-SHA256(key, prev + "\\n" + canonical JSON of the entry without "mac")``, where
  ``prev`` is the previous entry's mac (``""`` for seq 1) and canonical JSON is
  ``json.dumps(obj, sort_keys=True, separators=(",", ":"))``. A line is exactly that text with
  ``"mac"`` added last, so every byte of it is covered. The key comes from the caller (derived
  from the vault master key): whoever edits the file cannot recompute the chain.
* ``audit.head`` -- one fixed-length record naming the latest entry, ``{seq, mac}``, with its
  own ``HMAC(key, "head\\n" + seq + "\\n" + mac)``, rewritten in place after every append. A log
  whose tail was cut off no longer reaches its head.

Crashes: the line is written with one ``write`` before the head, so a process killed between
the two leaves the log one entry ahead of its head -- the one allowance ``verify`` makes. A kill
during the line's own write can leave a torn last line with no newline; it was never
acknowledged and :meth:`AuditLog.open` cuts it away. Without ``fsync`` every acknowledged entry
survives the process being killed at any instant (it is in the kernel's page cache); with
``fsync=True`` it also survives a power loss or a kernel crash.

What the chain cannot show on its own: both files rolled back together to an earlier state, or
both deleted. Shipping the head elsewhere (the uplink) closes that gap.

Callers pass names and ids, never secret values; ``extra`` is theirs to keep clean.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from json.encoder import encode_basestring_ascii as _quote
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from agent.crypto import Clock, utcnow
from common.errors import IntegrityError, UnavailableError

LOG_NAME = "audit.log"
HEAD_NAME = "audit.head"
HEAD_SIZE = 256  # bytes in the head record, its newline included
HEAD_VERSION = 1
MAX_LINE = 16 * 1024  # longest entry, newline included; a torn tail is shorter than one entry
MIN_KEY_BYTES = 16
MAX_PROBLEMS = 20  # problems a report lists; the rest are counted

_TORN_RETRIES = 5  # verify re-reads a partial last line this often (a live writer may finish it)
_RETRY_PAUSE = 0.002
_SCAN_CHUNK = 64 * 1024
_MAC_RE = re.compile(r"[0-9a-f]{64}")
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False).encode
_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- format


class _Bad(Exception):
    """A line or head record that is not what the agent writes (the text says why)."""


class _BadMac(_Bad):
    """A record that parses but whose MAC does not match."""


class _Mac:
    """HMAC-SHA256 under one key with the key schedule done once (the append hot path)."""

    __slots__ = ("_base",)

    def __init__(self, key: bytes) -> None:
        self._base = hmac.new(key, digestmod=hashlib.sha256)

    def hex(self, message: bytes) -> str:
        """The hex MAC of ``message``."""
        h = self._base.copy()
        h.update(message)
        return h.hexdigest()

    def __repr__(self) -> str:
        return "_Mac(**redacted**)"


def _is_mac(value: object) -> bool:
    return isinstance(value, str) and _MAC_RE.fullmatch(value) is not None


def _json(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _head_record(mac: _Mac, seq: int, entry_mac: str) -> bytes:
    """The fixed-length head record for entry ``seq``."""
    tag = mac.hex(f"head\n{seq}\n{entry_mac}".encode("ascii"))
    text = f'{{"hmac":"{tag}","mac":"{entry_mac}","seq":{seq},"v":{HEAD_VERSION}}}'
    return text.ljust(HEAD_SIZE - 1).encode("ascii") + b"\n"


def _parse_head(raw: bytes, mac: _Mac) -> tuple[int, str]:
    """``(seq, mac)`` from a head record; raises :class:`_Bad` or :class:`_BadMac`."""
    if len(raw) != HEAD_SIZE or not raw.endswith(b"\n"):
        raise _Bad(f"it is {len(raw)} bytes long, not {HEAD_SIZE}")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _Bad("it is not valid JSON") from exc
    if not isinstance(doc, dict) or doc.get("v") != HEAD_VERSION:
        raise _Bad("it is not a head record")
    seq, entry_mac = doc.get("seq"), doc.get("mac")
    if type(seq) is not int or seq < 0 or not isinstance(entry_mac, str):
        raise _Bad("it is not a head record")
    if not (entry_mac == "" if seq == 0 else _is_mac(entry_mac)) or not _is_mac(doc.get("hmac")):
        raise _Bad("it is not a head record")
    if not hmac.compare_digest(mac.hex(f"head\n{seq}\n{entry_mac}".encode("ascii")), doc["hmac"]):
        raise _BadMac("its MAC does not match")
    return seq, entry_mac


def _parse_entry(raw: bytes) -> dict[str, Any]:
    """A line (without newline) as an entry with well-formed seq, prev and mac; else _Bad."""
    try:
        entry = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _Bad("it is not valid JSON") from exc
    if not isinstance(entry, dict):
        raise _Bad("it is not a JSON object")
    seq, prev = entry.get("seq"), entry.get("prev")
    if type(seq) is not int or seq < 1 or not _is_mac(entry.get("mac")):
        raise _Bad("it is not an audit entry (its seq or mac is missing or malformed)")
    if not (prev == "" or _is_mac(prev)):
        raise _Bad("it is not an audit entry (its prev is malformed)")
    return entry


def _entry_ok(mac: _Mac, entry: dict[str, Any], raw: bytes) -> bool:
    """Whether the line is exactly the one the agent wrote for this entry.

    The agent writes the canonical body with ``"mac"`` added last, so the MAC is checked over
    the line's own bytes, minus that suffix: no re-encoding, and every byte is covered (a
    reformatted but equivalent line fails too).
    """
    suffix = f',"mac":"{entry["mac"]}"}}'.encode("ascii")
    if not raw.endswith(suffix):
        return False
    body = raw[: -len(suffix)] + b"}"
    expected = mac.hex(entry["prev"].encode("ascii") + b"\n" + body)
    return hmac.compare_digest(expected, entry["mac"])


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_private(fd: int) -> None:
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)


def _pwrite_all(fd: int, data: bytes) -> None:
    written = os.pwrite(fd, data, 0)
    if written != len(data):
        raise OSError(errno.EIO, f"short write to the head file ({written} of {len(data)} bytes)")


def _tail(fd: int, size: int) -> tuple[bytes | None, int]:
    """The last complete line (without newline) and the offset just past it.

    Reads at most two lines' worth from the end of the file, never the whole log. Raises
    :class:`_Bad` when that stretch is not the end of a log (no line ends where one must).
    """
    start = max(0, size - 2 * MAX_LINE)
    buf = os.pread(fd, size - start, start)
    nl = buf.rfind(b"\n")
    if nl < 0:
        if start > 0:
            raise _Bad(f"its last {size - start:,} bytes hold no line end")
        return None, 0
    end = start + nl + 1
    if size - end >= MAX_LINE:
        raise _Bad(f"its last {size - end:,} bytes are longer than any entry")
    prev_nl = buf.rfind(b"\n", 0, nl)
    if prev_nl < 0 and start > 0:
        raise _Bad("its last line is longer than any entry")
    return buf[prev_nl + 1 : nl], end


# --------------------------------------------------------------------------- writer


class AuditLog:
    """The append side of one audit folder; one process at a time (an exclusive lock).

    ``_fd`` is the log's file descriptor (``O_APPEND``). The fail-closed test swaps in a
    descriptor opened read-only so that a real ``write`` fails with ``EBADF``.
    """

    def __init__(
        self, folder: Path, mac_key: bytes, *, fsync: bool = False, clock: Clock = utcnow
    ) -> None:
        if len(mac_key) < MIN_KEY_BYTES:
            raise ValueError(f"the audit MAC key must be at least {MIN_KEY_BYTES} bytes")
        self.folder = Path(folder)
        self.log_path = self.folder / LOG_NAME
        self.head_path = self.folder / HEAD_NAME
        self.fsync = fsync
        self._mac = _Mac(bytes(mac_key))
        self._clock = clock
        self._second = -1  # the system clock's last whole second and its text, cached
        self._second_text = ""
        self._fd: int | None = None
        self._head_fd: int | None = None
        self._seq = 0
        self._last = ""  # mac of entry _seq
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
            fd = os.open(self.log_path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
        """Close the files and release the lock; idempotent."""
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
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
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
        elif head[0] == seq - 1 and head[1] == prev:
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
            self._head_fd = os.open(self.head_path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            if has_entries:
                raise self._refuse(
                    "its head file audit.head is missing, so a cut-off tail cannot be ruled out"
                ) from None
            self._head_fd = self._create_head()
        _make_private(self._head_fd)
        raw = os.pread(self._head_fd, HEAD_SIZE + 1, 0)
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
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _pwrite_all(fd, _head_record(self._mac, 0, ""))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.head_path)
        _fsync_dir(self.folder)
        return os.open(self.head_path, os.O_RDWR | os.O_CLOEXEC)

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
        try:
            self._write(data, _head_record(self._mac, seq, mac))
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._repair()
            raise UnavailableError(
                f"the audit log cannot be written: {exc.strerror or exc}; "
                "requests are refused until it can"
            ) from exc
        self._seq, self._last, self._size = seq, mac, self._size + len(data)
        return seq

    def _write(self, line: bytes, head: bytes) -> None:
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


# --------------------------------------------------------------------------- readers


@dataclass
class VerifyReport:
    """What :func:`verify` found; ``problems`` are sentences naming the line or seq."""

    ok: bool
    entries: int
    head_seq: int
    problems: list[str] = field(default_factory=list)


class _Findings:
    """Problems in order, at most MAX_PROBLEMS listed of each kind, the rest counted."""

    def __init__(self) -> None:
        self.listed: list[tuple[bool, str]] = []
        self.counts = {False: 0, True: 0}

    def add(self, text: str, *, mac: bool = False) -> None:
        self.counts[mac] += 1
        if self.counts[mac] <= MAX_PROBLEMS:
            self.listed.append((mac, text))

    def sentences(self, wrong_key: str | None) -> list[str]:
        if wrong_key is None:
            items = [text for _, text in self.listed]
            total = self.counts[False] + self.counts[True]
        else:
            items = [wrong_key] + [text for mac, text in self.listed if not mac]
            total = self.counts[False] + 1
        shown = items[:MAX_PROBLEMS]
        if total > len(shown):
            shown.append(f"... and {total - len(shown):,} more problems not listed")
        return shown


class _Chain:
    """Walks the log's lines in order, checking each entry and its link to the one before."""

    def __init__(self, mac: _Mac, findings: _Findings, head_seq: int) -> None:
        self.mac = mac
        self.findings = findings
        self.head_seq = head_seq
        self.head_entry_mac: str | None = None  # the log's mac for entry head_seq
        self.entries = 0
        self.good_macs = 0
        self.bad_macs = 0
        self.last_seq = 0
        self.last_mac = ""
        self.resync = False  # after a garbled line, take the next seq as it comes

    def line(self, lineno: int, raw: bytes) -> None:
        add = self.findings.add
        try:
            entry = _parse_entry(raw)
        except _Bad as exc:
            add(f"line {lineno}: {exc}")
            self.resync = True
            return
        seq = entry["seq"]
        if _entry_ok(self.mac, entry, raw):
            self.good_macs += 1
        else:
            self.bad_macs += 1
            add(f"entry {seq} (line {lineno}): its MAC does not match (edited)", mac=True)
        if self.resync:
            self.resync = False
        elif seq != self.last_seq + 1:
            if self.entries == 0:
                add(f"line {lineno}: the log starts at seq {seq}, not 1 (deleted from its start)")
            else:
                add(f"line {lineno}: seq {seq} follows {self.last_seq} (deleted or reordered)")
        elif entry["prev"] != self.last_mac:
            add(
                f"entry {seq} (line {lineno}): it does not link to entry {self.last_seq} "
                "(replaced or reordered)"
            )
        if seq == self.head_seq:
            self.head_entry_mac = entry["mac"]
        self.entries += 1
        self.last_seq, self.last_mac = seq, entry["mac"]


def _read_head(path: Path, mac: _Mac) -> tuple[tuple[int, str] | None, str | None, bool]:
    """``(head, problem, problem_is_mac)``; retries briefly in case a writer is mid-update."""
    problem, is_mac = "", False
    for attempt in range(3):
        if attempt:
            time.sleep(_RETRY_PAUSE)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            missing = f"the head file {path.name} is missing (deleted?), so a cut-off tail"
            return None, f"{missing} of the log cannot be ruled out", False
        try:
            return _parse_head(raw, mac), None, False
        except _BadMac as exc:
            problem, is_mac = f"the head file {path.name}: {exc} (edited?)", True
        except _Bad as exc:
            problem, is_mac = f"the head file {path.name} is garbled: {exc}", False
    return None, problem, is_mac


def _lines(f: BinaryIO, limit: int, *, wait: bool) -> Iterator[tuple[int, bytes | None, bool]]:
    """``(lineno, line without newline or None if too long, complete)`` up to byte ``limit``.

    A last line without its newline is re-read a few times when ``wait`` (a live writer may be
    finishing it) and then yielded as incomplete. Memory stays bounded by MAX_LINE.
    """
    lineno = 0
    while f.tell() < limit:
        raw = f.readline(MAX_LINE + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            while (chunk := f.readline(_SCAN_CHUNK)) and not chunk.endswith(b"\n"):
                pass
            yield lineno, None, True
            continue
        for _ in range(_TORN_RETRIES if wait else 0):
            if raw.endswith(b"\n"):
                break
            time.sleep(_RETRY_PAUSE)
            raw += f.readline(MAX_LINE + 1 - len(raw))
        if raw.endswith(b"\n"):
            yield lineno, raw[:-1], True
        else:
            yield lineno, raw, False
            return


def verify(folder: Path, mac_key: bytes) -> VerifyReport:
    """Check an audit folder end to end in constant memory.

    Finds edited, deleted, reordered and garbled lines, a torn last line, a tail cut off below
    the head, a missing or garbled head, and entries past the head beyond the one a crash may
    leave. A key that verifies nothing is reported once, not once per entry. Safe to run while
    the agent appends (it reads the head first and re-reads it at the end).
    """
    folder = Path(folder)
    mac = _Mac(bytes(mac_key))
    findings = _Findings()
    head, problem, head_mac_bad = _read_head(folder / HEAD_NAME, mac)
    if problem is not None:
        findings.add(problem, mac=head_mac_bad)
    head_seq = head[0] if head else 0
    chain = _Chain(mac, findings, head_seq)
    log_path = folder / LOG_NAME
    try:
        with log_path.open("rb") as f:
            limit = os.fstat(f.fileno()).st_size
            for lineno, raw, complete in _lines(f, limit, wait=True):
                if raw is None:
                    findings.add(f"line {lineno}: it is longer than any entry")
                    chain.resync = True
                elif complete:
                    chain.line(lineno, raw)
                else:
                    findings.add(
                        f"line {lineno}: the last line is incomplete (a write cut off after entry "
                        f"{chain.last_seq}; never acknowledged, the agent removes it on start)"
                    )
    except FileNotFoundError:
        findings.add(f"there is no audit log at {log_path}")
    except OSError as exc:
        raise UnavailableError(f"the audit log {log_path} cannot be read: {exc.strerror}") from exc
    if head is not None:
        _check_head(chain, head, _read_head(folder / HEAD_NAME, mac)[0])
    wrong_key = None
    if chain.bad_macs > 0 and chain.good_macs == 0 and head is None:
        wrong_key = (
            f"the key does not match this audit log: none of its {chain.entries:,} entries "
            f"{'nor its head ' if head_mac_bad else ''}verifies with it (wrong key, or all "
            "of it was rewritten)"
        )
    problems = findings.sentences(wrong_key)
    return VerifyReport(
        ok=not problems, entries=chain.entries, head_seq=head_seq, problems=problems
    )


def _check_head(chain: _Chain, head: tuple[int, str], later: tuple[int, str] | None) -> None:
    """The log must reach the head and go at most one entry past it (a crash between writes)."""
    add = chain.findings.add
    seq, entry_mac = head
    last = chain.last_seq
    if last < seq:
        gone = f"entry {seq} is" if seq == last + 1 else f"entries {last + 1} to {seq} are"
        missing = f"{gone} missing"
        add(f"{missing}: the log ends at {last} but its head says {seq} (truncated)")
    elif seq > 0 and chain.head_entry_mac not in (None, entry_mac):
        add(f"entry {seq}: the head names another MAC for it (the head and log do not match)")
    top = max(seq, later[0] if later else seq)
    if last > top + 1:
        add(
            f"the log runs to entry {last} but its head says {top}: entries {top + 2} to "
            f"{last} were never acknowledged (appended outside the agent, or the head was "
            "rolled back)"
        )


def _peek_seq(raw: bytes) -> int | None:
    try:
        seq = json.loads(raw).get("seq")
    except (ValueError, RecursionError, AttributeError):
        return None
    return seq if type(seq) is int else None


def _seek_before(f: BinaryIO, size: int, since_seq: int) -> None:
    """Put ``f`` at a line start before the first entry past ``since_seq`` (bisecting)."""
    lo, hi = 0, size
    while hi - lo > _SCAN_CHUNK:
        mid = (lo + hi) // 2
        f.seek(mid)
        f.readline(MAX_LINE + 1)  # the rest of the line the seek landed in
        seq = _peek_seq(f.readline(MAX_LINE + 1))
        if seq is None:
            break  # garbled or the end: scan from lo
        if seq <= since_seq:
            lo = mid
        else:
            hi = mid
    f.seek(lo)
    if lo:
        f.readline(MAX_LINE + 1)


def iter_entries(folder: Path, *, since_seq: int = 0) -> Iterator[dict[str, Any]]:
    """Yield the log's entries with seq above ``since_seq``, in order, without checking MACs.

    Finds its starting point by bisecting the file, so reading the newest entries of a large
    log is cheap. Stops before an incomplete last line (a write in progress or cut off); a
    line that is not an entry raises ``UnavailableError`` (run :func:`verify`).
    """
    path = Path(folder) / LOG_NAME
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UnavailableError(f"the audit log {path} cannot be read: {exc.strerror}") from exc
    with f:
        size = os.fstat(f.fileno()).st_size
        if since_seq > 0:
            _seek_before(f, size, since_seq)
        while True:
            offset = f.tell()
            raw = f.readline(MAX_LINE + 1)
            if not raw.endswith(b"\n"):
                if len(raw) > MAX_LINE:
                    raise UnavailableError(
                        f"the audit log {path} has an overlong line at byte {offset:,}; run "
                        "`keyvault agent audit verify`"
                    )
                return
            try:
                entry = _parse_entry(raw[:-1])
            except _Bad as exc:
                raise UnavailableError(
                    f"the audit log {path} has a line at byte {offset:,} that is not an entry "
                    f"({exc}); run `keyvault agent audit verify`"
                ) from None
            if entry["seq"] > since_seq:
                yield entry


def snapshot(folder: Path, dest: Path) -> int:
    """Copy the log and head consistently while the log is being appended to; returns the seq.

    The head is read first; the log is then copied up to and including the entry the head
    names, so the copy verifies exactly like the original did at that moment.
    """
    head_raw = (folder / HEAD_NAME).read_bytes()
    try:
        seq = int(json.loads(head_raw)["seq"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UnavailableError(
            f"the audit head in {folder} cannot be read; run `keyvault agent audit verify`"
        ) from exc
    (dest / HEAD_NAME).write_bytes(head_raw)
    with (folder / LOG_NAME).open("rb") as src, (dest / LOG_NAME).open("wb") as out:
        if seq:
            for line in src:
                out.write(line)
                if _parse_entry(line).get("seq") == seq:
                    break
    return seq
