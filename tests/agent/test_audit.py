"""Tests for the agent's audit log: real files, real OS failures, a real SIGKILL."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.audit import HEAD_SIZE, AuditLog, iter_entries, verify
from agent.audit._format import MAX_HEAD_LAG, _head_record, _Mac
from agent.audit.reader import last_entry
from common.errors import IntegrityError, UnavailableError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
ROOT = Path(__file__).resolve().parents[2]


def fill(folder: Path, count: int, *, key: bytes = KEY) -> tuple[int, str]:
    """Append ``count`` varied entries; return the head."""
    with AuditLog(folder, key) as log:
        for i in range(count):
            log.append(
                op="secret.read" if i % 3 else "secret.list",
                outcome="allowed" if i % 7 else "denied",
                status=200 if i % 7 else 403,
                actor=None if i % 11 == 0 else f"token:ci-{i % 5}",
                target=f"prod/db/pässwörd-{i}" if i % 2 else None,
                remote="10.0.0.7",
                request_id=f"req-{i:06d}",
                extra=None if i % 4 else {"version": i % 9, "tags": ["a", "\u2028"], "f": 0.5},
            )
        return log.head


def log_lines(folder: Path) -> list[bytes]:
    return (folder / "audit.log").read_bytes().splitlines(keepends=True)


def write_lines(folder: Path, lines: list[bytes]) -> None:
    (folder / "audit.log").write_bytes(b"".join(lines))


def child(code: str, folder: Path, **kwargs: object) -> subprocess.Popen[bytes]:
    """Start a Python child that can import the project, with folder and key as argv."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-c", code, str(folder), KEY.hex()], env=env, cwd=ROOT, **kwargs
    )


# --------------------------------------------------------------------------- clean logs


def test_clean_log_of_1000_entries_verifies(tmp_path: Path) -> None:
    seq, mac = fill(tmp_path, 1000)
    report = verify(tmp_path, KEY)
    assert report.ok, report.problems
    assert (report.entries, report.head_seq, seq) == (1000, 1000, 1000)
    entries = list(iter_entries(tmp_path))
    assert [e["seq"] for e in entries] == list(range(1, 1001))
    assert entries[0]["prev"] == ""
    assert all(b["prev"] == a["mac"] for a, b in itertools.pairwise(entries))
    assert entries[-1]["mac"] == mac


def test_entries_and_head_follow_the_documented_format(tmp_path: Path) -> None:
    fill(tmp_path, 3)
    prev = ""
    for raw in log_lines(tmp_path):
        entry = json.loads(raw)
        mac = entry.pop("mac")
        canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"))
        expected = hmac.new(KEY, f"{prev}\n{canonical}".encode(), hashlib.sha256).hexdigest()
        assert mac == expected and entry["prev"] == prev
        assert set(entry) >= {"seq", "time", "actor", "op", "target", "outcome", "status"}
        assert datetime.fromisoformat(entry["time"]).utcoffset() == timedelta(0)
        prev = mac
    head_raw = (tmp_path / "audit.head").read_bytes()
    assert len(head_raw) == HEAD_SIZE and head_raw.endswith(b" \n")
    head = json.loads(head_raw)
    tag = hmac.new(KEY, f"head\n3\n{prev}".encode(), hashlib.sha256).hexdigest()
    assert (head["seq"], head["mac"], head["hmac"]) == (3, prev, tag)


def test_files_are_private(tmp_path: Path) -> None:
    fill(tmp_path / "audit", 1)
    for name in ("audit.log", "audit.head"):
        assert (tmp_path / "audit" / name).stat().st_mode & 0o777 == 0o600


def test_injected_clock_is_used_and_normalised_to_utc(tmp_path: Path) -> None:
    fixed = datetime(2030, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    with AuditLog(tmp_path, KEY, clock=lambda: fixed) as log:
        log.append(op="x", outcome="allowed", status=200)
    (entry,) = iter_entries(tmp_path)
    assert entry["time"] == "2030-01-02T03:04:05.000000+00:00"


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    seq, mac = fill(tmp_path, 50)
    with AuditLog(tmp_path, KEY) as log:
        assert log.head == (seq, mac)
        assert log.append(op="secret.write", outcome="allowed", status=201) == 51
    last = list(iter_entries(tmp_path, since_seq=50))
    assert [(e["seq"], e["prev"]) for e in last] == [(51, mac)]
    assert verify(tmp_path, KEY).ok


def test_repr_does_not_show_the_key(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, KEY).open()
    try:
        text = repr(log) + str(log)
    finally:
        log.close()
    assert KEY.hex() not in text and repr(KEY) not in text and text.startswith("AuditLog(")


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    with AuditLog(tmp_path, KEY), pytest.raises(UnavailableError, match="in use"):
        AuditLog(tmp_path, KEY).open()


def test_iter_entries_since_seq(tmp_path: Path) -> None:
    fill(tmp_path, 1000)  # well over the bisection's 64 KiB threshold
    for since in (0, 1, 499, 990, 999, 1000, 5000):
        assert [e["seq"] for e in iter_entries(tmp_path, since_seq=since)] == list(
            range(since + 1, 1001)
        )
    with (tmp_path / "audit.log").open("ab") as f:
        f.write(b'{"seq":1001,"ti')
    assert [e["seq"] for e in iter_entries(tmp_path, since_seq=998)] == [999, 1000]


def test_bad_extra_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with AuditLog(tmp_path, KEY) as log:
        log.append(op="x", outcome="allowed", status=200)
        with pytest.raises(TypeError):
            log.append(op="x", outcome="allowed", status=200, extra={"when": object()})
        with pytest.raises(ValueError, match="keep `extra` small"):
            log.append(op="x", outcome="allowed", status=200, extra={"pad": "x" * 20_000})
        assert log.head[0] == 1
        assert log.append(op="x", outcome="allowed", status=200) == 2
    assert verify(tmp_path, KEY).ok


# --------------------------------------------------------------------------- tampering


def test_edited_field_is_found(tmp_path: Path) -> None:
    fill(tmp_path, 1000)
    lines = log_lines(tmp_path)
    assert b'"status":200' in lines[499]
    lines[499] = lines[499].replace(b'"status":200', b'"status":403')
    write_lines(tmp_path, lines)
    report = verify(tmp_path, KEY)
    assert not report.ok
    assert report.problems == ["entry 500 (line 500): its MAC does not match (edited)"]


def test_reformatted_line_is_found(tmp_path: Path) -> None:
    fill(tmp_path, 10)
    lines = log_lines(tmp_path)
    lines[4] = lines[4].replace(b'"op":', b'"op": ')
    write_lines(tmp_path, lines)
    assert verify(tmp_path, KEY).problems == ["entry 5 (line 5): its MAC does not match (edited)"]


def test_deleted_middle_line_is_found(tmp_path: Path) -> None:
    fill(tmp_path, 1000)
    lines = log_lines(tmp_path)
    del lines[499]
    write_lines(tmp_path, lines)
    report = verify(tmp_path, KEY)
    assert report.problems == ["line 500: seq 501 follows 499 (deleted or reordered)"]


def test_deleted_first_line_is_found(tmp_path: Path) -> None:
    fill(tmp_path, 10)
    write_lines(tmp_path, log_lines(tmp_path)[1:])
    (problem,) = verify(tmp_path, KEY).problems
    assert "starts at seq 2" in problem


def test_swapped_lines_are_found(tmp_path: Path) -> None:
    fill(tmp_path, 1000)
    lines = log_lines(tmp_path)
    lines[299], lines[300] = lines[300], lines[299]
    write_lines(tmp_path, lines)
    report = verify(tmp_path, KEY)
    assert not report.ok
    assert report.problems[0] == "line 300: seq 301 follows 299 (deleted or reordered)"
    assert "line 301: seq 300 follows 301" in report.problems[1]


def test_replaced_entry_from_another_chain_is_found(tmp_path: Path) -> None:
    fill(tmp_path / "a", 10)
    fill(tmp_path / "b", 10)
    lines = log_lines(tmp_path / "a")
    lines[5] = log_lines(tmp_path / "b")[5]  # a valid entry 6 under the same key
    write_lines(tmp_path / "a", lines)
    problems = verify(tmp_path / "a", KEY).problems
    assert any("entry 6" in p and "does not link to entry 5" in p for p in problems)
    assert any("entry 7" in p and "does not link to entry 6" in p for p in problems)


@pytest.mark.parametrize("cut", [1, 10])
def test_truncated_tail_is_found(tmp_path: Path, cut: int) -> None:
    fill(tmp_path, 1000)
    write_lines(tmp_path, log_lines(tmp_path)[:-cut])
    report = verify(tmp_path, KEY)
    missing = "entry 1000 is missing" if cut == 1 else "entries 991 to 1000 are missing"
    assert report.problems == [
        f"{missing}: the log ends at {1000 - cut} but its head says 1000 (truncated)"
    ]
    with pytest.raises(UnavailableError, match="truncated"):
        AuditLog(tmp_path, KEY).open()


def test_emptied_log_is_found(tmp_path: Path) -> None:
    fill(tmp_path, 5)
    (tmp_path / "audit.log").write_bytes(b"")
    assert "entries 1 to 5 are missing" in verify(tmp_path, KEY).problems[0]


def test_deleted_head_is_found(tmp_path: Path) -> None:
    fill(tmp_path, 100)
    (tmp_path / "audit.head").unlink()
    report = verify(tmp_path, KEY)
    assert not report.ok
    assert report.problems == [
        "the head file audit.head is missing (deleted?), so a cut-off tail of the log "
        "cannot be ruled out"
    ]
    with pytest.raises(UnavailableError, match=r"head file audit\.head is missing"):
        AuditLog(tmp_path, KEY).open()


def test_garbled_head_is_found(tmp_path: Path) -> None:
    fill(tmp_path, 10)
    (tmp_path / "audit.head").write_bytes(b"not a head\n")
    (problem,) = verify(tmp_path, KEY).problems
    assert "garbled" in problem
    with pytest.raises(UnavailableError, match="garbled"):
        AuditLog(tmp_path, KEY).open()


def test_edited_head_is_found(tmp_path: Path) -> None:
    fill(tmp_path, 10)
    head = tmp_path / "audit.head"
    head.write_bytes(head.read_bytes().replace(b'"seq":10', b'"seq":11'))
    (problem,) = verify(tmp_path, KEY).problems
    assert "audit.head" in problem and "MAC does not match" in problem
    with pytest.raises(IntegrityError):
        AuditLog(tmp_path, KEY).open()


def test_wrong_key_is_reported_once(tmp_path: Path) -> None:
    fill(tmp_path, 1000)
    report = verify(tmp_path, OTHER_KEY)
    assert not report.ok
    assert len(report.problems) == 1
    assert report.problems[0].startswith("the key does not match this audit log")
    with pytest.raises(IntegrityError):
        AuditLog(tmp_path, OTHER_KEY).open()


def test_many_problems_are_capped_with_a_count(tmp_path: Path) -> None:
    fill(tmp_path, 1000)
    write_lines(
        tmp_path, [ln.replace(b'"remote":"10.', b'"remote":"11.') for ln in log_lines(tmp_path)]
    )
    report = verify(tmp_path, KEY)
    assert len(report.problems) == 21
    assert report.problems[-1] == "... and 980 more problems not listed"


def test_garbled_line_is_found_without_cascading(tmp_path: Path) -> None:
    fill(tmp_path, 10)
    lines = log_lines(tmp_path)
    lines[3] = b"garbage\n"
    write_lines(tmp_path, lines)
    assert verify(tmp_path, KEY).problems == ["line 4: it is not valid JSON"]


# --------------------------------------------------------------------------- crashes


def test_torn_last_line_is_cut_at_open(tmp_path: Path) -> None:
    fill(tmp_path, 20)
    whole = (tmp_path / "audit.log").read_bytes()
    extra_line = log_lines(tmp_path)[-1]
    with (tmp_path / "audit.log").open("ab") as f:
        f.write(extra_line[: len(extra_line) // 2])
    (problem,) = verify(tmp_path, KEY).problems
    assert problem.startswith("line 21: the last line is incomplete")
    with AuditLog(tmp_path, KEY) as log:
        assert (tmp_path / "audit.log").read_bytes() == whole
        assert log.head[0] == 20
        assert log.append(op="x", outcome="allowed", status=200) == 21
    assert verify(tmp_path, KEY).ok


def test_killed_between_the_two_writes_is_allowed(tmp_path: Path) -> None:
    fill(tmp_path, 20)
    old_head = (tmp_path / "audit.head").read_bytes()
    with AuditLog(tmp_path, KEY) as log:
        log.append(op="x", outcome="allowed", status=200)
    (tmp_path / "audit.head").write_bytes(old_head)  # as if killed before the head write
    report = verify(tmp_path, KEY)
    assert report.ok and (report.entries, report.head_seq) == (21, 20)
    with AuditLog(tmp_path, KEY) as log:
        assert log.head[0] == 21
    assert json.loads((tmp_path / "audit.head").read_bytes())["seq"] == 21
    # up to MAX_HEAD_LAG entries past the head: killed before the per-turn head write
    old_head = (tmp_path / "audit.head").read_bytes()
    fill(tmp_path, MAX_HEAD_LAG)
    (tmp_path / "audit.head").write_bytes(old_head)
    report = verify(tmp_path, KEY)
    assert report.ok and report.entries == 21 + MAX_HEAD_LAG, report.problems
    with AuditLog(tmp_path, KEY) as log:
        assert log.head[0] == 21 + MAX_HEAD_LAG
    # one more than that is not a crash
    top = 21 + MAX_HEAD_LAG
    old_head = (tmp_path / "audit.head").read_bytes()
    fill(tmp_path, MAX_HEAD_LAG + 1)
    (tmp_path / "audit.head").write_bytes(old_head)
    (problem,) = verify(tmp_path, KEY).problems
    assert f"runs to entry {top + MAX_HEAD_LAG + 1} but its head says {top}" in problem
    with pytest.raises(UnavailableError):
        AuditLog(tmp_path, KEY).open()


def test_entries_past_the_head_must_chain_back_to_it(tmp_path: Path) -> None:
    fill(tmp_path, 10)
    old_head = (tmp_path / "audit.head").read_bytes()
    fill(tmp_path, 5)
    (tmp_path / "audit.head").write_bytes(old_head)
    lines = log_lines(tmp_path)
    # entry 12 swapped for an entry of another chain: the entries past the head no longer
    # reach it, so this is no crash to recover from
    stranger = tmp_path / "other"
    fill(stranger, 12)
    write_lines(tmp_path, [*lines[:11], log_lines(stranger)[11], *lines[12:]])
    with pytest.raises((UnavailableError, IntegrityError)):
        AuditLog(tmp_path, KEY).open()
    # the head naming an entry the log does not hold (another MAC for entry 10) is refused too
    write_lines(tmp_path, lines)
    (tmp_path / "audit.head").write_bytes(_head_record(_Mac(KEY), 10, "0" * 64))
    with pytest.raises((UnavailableError, IntegrityError)):
        AuditLog(tmp_path, KEY).open()


LOOP_CRASH_CHILD = """
import asyncio, sys
from pathlib import Path
from agent.audit import AuditLog
folder, key = Path(sys.argv[1]), bytes.fromhex(sys.argv[2])
log = AuditLog(folder, key).open()

async def main():
    i = 0
    while True:
        for _ in range(1 + i % 40):  # several entries per loop turn, as under load
            i += 1
            seq = log.append(op="secret.read", outcome="allowed", status=200,
                             extra={"pad": "x" * (i * 97 % 400)})
            sys.stdout.write(f"{seq}\\n")
        sys.stdout.flush()
        await asyncio.sleep(0)

asyncio.run(main())
"""


def test_sigkill_inside_an_event_loop_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    """Inside a loop the head is written once per turn: a kill leaves it up to MAX_HEAD_LAG
    entries behind, which verify accepts and open brings forward; nothing acknowledged is lost."""
    folder = tmp_path / "audit"
    for round_ in range(3):
        acks = tmp_path / f"acks-{round_}.txt"
        with acks.open("wb") as out:
            proc = child(LOOP_CRASH_CHILD, folder, stdout=out)
            try:
                wait_for_bytes(acks)
                time.sleep(0.2 + 0.1 * round_)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        acked = [int(x) for x in acks.read_bytes().split(b"\n")[:-1]]
        head_seq = json.loads((folder / "audit.head").read_bytes())["seq"]
        report = verify(folder, KEY)
        assert all("the last line is incomplete" in p for p in report.problems), report
        assert 0 <= report.entries - head_seq <= MAX_HEAD_LAG
        with AuditLog(folder, KEY) as log:
            seqs = {e["seq"] for e in iter_entries(folder)}
            assert set(acked) <= seqs
            assert log.head[0] >= acked[-1]
            log.append(op="after-crash", outcome="allowed", status=200)
    report = verify(folder, KEY)
    assert report.ok, report.problems


def test_write_failure_raises_and_does_not_advance(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, KEY).open()
    try:
        log.append(op="x", outcome="allowed", status=200)
        before, size = log.head, (tmp_path / "audit.log").stat().st_size
        writable = log._fd
        read_only = os.open(tmp_path / "audit.log", os.O_RDONLY)
        log._fd = read_only  # a real write(2) on this descriptor fails with EBADF
        try:
            with pytest.raises(UnavailableError, match="the audit log cannot be written") as err:
                log.append(op="secret.read", outcome="allowed", status=200)
            assert "requests are refused until it can" in str(err.value)
            assert err.value.http_status == 503
            assert log.head == before
            assert (tmp_path / "audit.log").stat().st_size == size
        finally:
            log._fd = writable
            os.close(read_only)
        assert log.append(op="x", outcome="allowed", status=200) == 2
    finally:
        log.close()
    assert verify(tmp_path, KEY).ok
    with pytest.raises(UnavailableError, match="not open"):
        log.append(op="x", outcome="allowed", status=200)


SHORT_WRITE_CHILD = """
import os, resource, signal, sys
from pathlib import Path
from agent.audit import AuditLog
from common.errors import UnavailableError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
folder, key = Path(sys.argv[1]), bytes.fromhex(sys.argv[2])
log = AuditLog(folder, key).open()
for _ in range(3):
    log.append(op="a", outcome="allowed", status=200)
size = os.path.getsize(folder / "audit.log")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, hard))  # room for 100 bytes only
try:
    log.append(op="b", outcome="allowed", status=200, extra={"pad": "x" * 500})
except UnavailableError as exc:
    grown = os.path.getsize(folder / "audit.log") - size
    print("refused", log.head[0], grown, exc.message, flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
print("next", log.append(op="c", outcome="allowed", status=200), flush=True)
"""


def test_short_write_from_a_full_file_is_cut_back(tmp_path: Path) -> None:
    proc = child(SHORT_WRITE_CHILD, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    refused, nxt = out.decode().splitlines()
    assert refused.startswith("refused 3 0 the audit log cannot be written: short write")
    assert nxt == "next 4"
    report = verify(tmp_path, KEY)
    assert report.ok and report.entries == 4, report.problems


CRASH_CHILD = """
import sys
from pathlib import Path
from agent.audit import AuditLog
folder, key = Path(sys.argv[1]), bytes.fromhex(sys.argv[2])
log = AuditLog(folder, key).open()
i = 0
while True:
    i += 1
    seq = log.append(op="secret.read", outcome="allowed", status=200, actor="svc",
                     target="prod/x", extra={"pad": "x" * (i * 97 % 400)})
    sys.stdout.write(f"{seq}\\n")
    sys.stdout.flush()
"""


def wait_for_bytes(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size > 0):
        assert time.monotonic() < deadline, f"{path} stayed empty"
        time.sleep(0.01)


def test_sigkill_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    folder = tmp_path / "audit"
    first = 1
    for round_ in range(2):  # the second round crashes a log that was recovered once
        acks = tmp_path / f"acks-{round_}.txt"
        with acks.open("wb") as out:
            proc = child(CRASH_CHILD, folder, stdout=out)
            try:
                wait_for_bytes(acks)
                time.sleep(0.3)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        acked = [int(x) for x in acks.read_bytes().split(b"\n")[:-1]]
        assert acked and acked == list(range(first, first + len(acked)))

        # before anyone reopens it: at most a torn last line, which was never acknowledged
        report = verify(folder, KEY)
        assert all("the last line is incomplete" in p for p in report.problems), report
        with AuditLog(folder, KEY) as log:
            seqs = {e["seq"] for e in iter_entries(folder, since_seq=first - 1)}
            assert set(acked) <= seqs
            assert log.head[0] in (acked[-1], acked[-1] + 1)
            first = log.append(op="after-crash", outcome="allowed", status=200) + 1
    report = verify(folder, KEY)
    assert report.ok and report.entries == first - 1, report.problems


LIVE_CHILD = """
import sys, time
from pathlib import Path
from agent.audit import AuditLog
folder, key = Path(sys.argv[1]), bytes.fromhex(sys.argv[2])
log = AuditLog(folder, key).open()
i = 0
while True:
    i += 1
    log.append(op="secret.read", outcome="allowed", status=200,
               extra={"pad": "y" * (i * 389 % 1000)})
    if i % 20 == 0:
        time.sleep(0.002)
"""


def test_verify_while_the_agent_appends(tmp_path: Path) -> None:
    proc = child(LIVE_CHILD, tmp_path)
    try:
        wait_for_bytes(tmp_path / "audit.log")
        deadline = time.monotonic() + 0.6
        runs = 0
        while time.monotonic() < deadline:
            report = verify(tmp_path, KEY)
            assert report.ok, report.problems
            runs += 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert runs >= 2
    with AuditLog(tmp_path, KEY):
        assert verify(tmp_path, KEY).ok


def test_naive_utc_and_aware_clocks_agree(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with AuditLog(tmp_path, KEY, clock=lambda: now) as log:
        log.append(op="x", outcome="allowed", status=200)
    with AuditLog(tmp_path, KEY) as log:
        log.append(op="x", outcome="allowed", status=200)
    a, b = (datetime.fromisoformat(e["time"]) for e in iter_entries(tmp_path))
    assert a == now and timedelta(0) <= b - a < timedelta(seconds=5)
    assert len(a.isoformat()) == len(b.isoformat())


async def test_inside_an_event_loop_the_head_is_written_once_per_turn(tmp_path: Path) -> None:
    with AuditLog(tmp_path, KEY) as log:
        log.append(op="x", outcome="allowed", status=200)
        await asyncio.sleep(0)
        on_disk = lambda: json.loads((tmp_path / "audit.head").read_bytes())["seq"]  # noqa: E731
        assert on_disk() == 1
        for _ in range(5):
            log.append(op="x", outcome="allowed", status=200)
        assert (on_disk(), log.head[0]) == (1, 6)  # acknowledged; the head waits for the turn
        await asyncio.sleep(0)
        assert on_disk() == 6
        for _ in range(MAX_HEAD_LAG + 3):  # never more than MAX_HEAD_LAG behind
            log.append(op="x", outcome="allowed", status=200)
            assert log.head[0] - on_disk() < MAX_HEAD_LAG
        assert verify(tmp_path, KEY).ok
    assert on_disk() == log.head[0]  # close writes it


async def test_a_failed_head_write_is_repaired_by_the_next_append_or_refuses_it(
    tmp_path: Path,
) -> None:
    log = AuditLog(tmp_path, KEY).open()
    try:
        log.append(op="x", outcome="allowed", status=200)
        good = log._head_fd
        log._head_fd = os.open(tmp_path / "audit.head", os.O_RDONLY)  # pwrite fails: EBADF
        try:
            log.append(op="x", outcome="allowed", status=200)
            await asyncio.sleep(0)  # the turn's head write fails, and is logged
            with pytest.raises(UnavailableError):
                log.append(op="x", outcome="allowed", status=200)  # repair fails: refused
        finally:
            os.close(log._head_fd)
            log._head_fd = good
        assert log.append(op="x", outcome="allowed", status=200) == 3
        await asyncio.sleep(0)
    finally:
        log.close()
    report = verify(tmp_path, KEY)
    assert report.ok and (report.entries, report.head_seq) == (3, 3), report.problems


def test_last_entry_reads_only_the_end_and_skips_a_write_in_progress(tmp_path: Path) -> None:
    """What the heartbeat reports for a worker's chain (agent/uplink/health.py)."""
    assert last_entry(tmp_path) is None  # no log yet
    with AuditLog(tmp_path, KEY) as log:
        assert last_entry(tmp_path) is None  # an empty log
        for i in range(3):
            log.append(op="secrets.read", outcome="ok", status=200, target=f"sec_{i}")
        assert last_entry(tmp_path) == log.head
        head = log.head
    with (tmp_path / "audit.log").open("ab") as f:
        f.write(b'{"actor":null,"op":"secrets.re')  # a line still being written
    assert last_entry(tmp_path) == head
    (tmp_path / "audit.log").write_bytes(b"x" * 40_000)  # no line end where one must be
    with pytest.raises(UnavailableError, match="does not end in an entry"):
        last_entry(tmp_path)
    (tmp_path / "audit.log").write_bytes(b'{"seq": "one"}\n')
    with pytest.raises(UnavailableError, match="audit verify"):
        last_entry(tmp_path)
    (tmp_path / "audit.log").unlink()
    (tmp_path / "audit.log").mkdir()  # opens, but reading it fails (EISDIR): an OS error
    with pytest.raises(UnavailableError, match="cannot be read"):
        last_entry(tmp_path)


def test_the_entry_mac_is_hmac_sha256_byte_for_byte() -> None:
    """``_Mac`` (HMAC from hashlib's SHA-256, for speed) agrees with ``hmac.new`` on keys
    shorter than, equal to and longer than SHA-256's 64-byte block, and on any message."""
    import hashlib
    import hmac
    import random

    from agent.audit._format import _Mac

    rng = random.Random(18)
    for size in (16, 32, 63, 64, 65, 100, 200):
        key = rng.randbytes(size)
        mac = _Mac(key)
        for length in (0, 1, 55, 64, 65, 300, 5000):
            message = rng.randbytes(length)
            assert mac.hex(message) == hmac.new(key, message, hashlib.sha256).hexdigest()
    assert "redacted" in repr(_Mac(b"k" * 32))
