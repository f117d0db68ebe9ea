"""Verifying the audit log: walk the chain and the head, and report what is wrong."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from agent.audit._format import (
    _RETRY_PAUSE,
    _SCAN_CHUNK,
    _TORN_RETRIES,
    HEAD_NAME,
    LOG_NAME,
    MAX_HEAD_LAG,
    MAX_LINE,
    MAX_PROBLEMS,
    _Bad,
    _BadMac,
    _entry_ok,
    _Mac,
    _parse_entry,
    _parse_head,
)
from common.errors import UnavailableError


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
    the head, a missing or garbled head, and entries past the head beyond the ``MAX_HEAD_LAG``
    a crash may leave. A key that verifies nothing is reported once, not once per entry. Safe
    to run while the agent appends (it reads the head first and re-reads it at the end).
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
    """The log must reach the head and go at most ``MAX_HEAD_LAG`` entries past it (a crash
    before the head caught up: the head is rewritten once per event-loop turn)."""
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
    if last > top + MAX_HEAD_LAG:
        add(
            f"the log runs to entry {last} but its head says {top}: entries {top + MAX_HEAD_LAG + 1} to "
            f"{last} were never acknowledged (appended outside the agent, or the head was "
            "rolled back)"
        )
