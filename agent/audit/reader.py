"""Reading the audit log: iterate entries from a sequence number, and snapshot it consistently."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from agent.audit._format import (
    _SCAN_CHUNK,
    HEAD_NAME,
    LOG_NAME,
    MAX_LINE,
    _Bad,
    _parse_entry,
    _tail,
)
from common.errors import UnavailableError


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


def last_entry(folder: Path) -> tuple[int, str] | None:
    """``(seq, mac)`` of the log's last complete entry, or None for an empty or absent log.

    Reads only the file's end, so it is cheap however long the log. The entry's MAC is not
    checked here (:func:`verify` does that); what the writer has not finished is not seen.
    Raises ``UnavailableError`` when the end of the file is not the end of a log.
    """
    path = Path(folder) / LOG_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnavailableError(f"the audit log {path} cannot be read: {exc.strerror}") from exc
    try:
        raw, _end = _tail(fd, os.fstat(fd).st_size)
        if raw is None:
            return None
        entry = _parse_entry(raw)
    except _Bad as exc:
        raise UnavailableError(
            f"the audit log {path} does not end in an entry ({exc}); run "
            "`keyvault agent audit verify`"
        ) from None
    except OSError as exc:
        raise UnavailableError(f"the audit log {path} cannot be read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return int(entry["seq"]), str(entry["mac"])


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
