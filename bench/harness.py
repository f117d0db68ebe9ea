"""Shared machinery of the benchmarks: processes that are always stopped, ab runs, results.

Every server a benchmark starts is registered with a :class:`Processes` registry and stopped
(SIGTERM, then SIGKILL) when the registry closes, also on an error or Ctrl+C. Children are asked
to die with the bench process too (``PR_SET_PDEATHSIG``), so even a ``kill -9`` of the bench
leaves nothing behind. Everything binds 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import resource
import secrets
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
AB = "ab"
VALUE_BYTES = 1024  # the secret value every read benchmark serves
CONCURRENCY = 32


def log(message: str) -> None:
    """Progress goes to stderr; the table goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def secret_value(size: int = VALUE_BYTES) -> str:
    """A random printable value of ``size`` bytes."""
    return secrets.token_hex(size // 2)


# ------------------------------------------------------------------------------ processes


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Proc:
    """A started server process."""

    name: str
    popen: subprocess.Popen[bytes]
    log_file: Path

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether it still runs."""
        return self.popen.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of its log, for error messages."""
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Processes:
    """Every process the bench started; :meth:`close` stops them all, one by one by pid."""

    def __init__(self) -> None:
        self._procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        log_file: Path,
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
    ) -> Proc:
        """Start ``argv`` with output to ``log_file``; it will be stopped by :meth:`close`."""
        out = open(log_file, "ab")
        try:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            out.close()
        proc = Proc(name, popen, log_file)
        self._procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 15) -> None:
        """SIGTERM, wait, then SIGKILL if it did not go."""
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{proc.name} (pid {proc.pid}) ignored SIGTERM; killing it")
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
                proc.popen.wait(5)
        if proc in self._procs:
            self._procs.remove(proc)

    def running(self) -> list[Proc]:
        """The processes started and not yet stopped, oldest first."""
        return list(self._procs)

    def close(self) -> None:
        """Stop every process still registered, newest first."""
        for proc in reversed(list(self._procs)):
            try:
                self.stop(proc)
            except Exception as exc:
                log(f"could not stop {proc.name} (pid {proc.pid}): {exc}")


@contextlib.contextmanager
def workspace(keep: bool = False) -> Iterator[tuple[Path, Processes]]:
    """A temp folder on disk and a process registry, both cleaned up at the end.

    SIGTERM is turned into KeyboardInterrupt for the duration, so ``kill PID`` cleans up too, and
    SIGINT raises KeyboardInterrupt even when the bench was started with it ignored.
    """
    folder = Path(tempfile.mkdtemp(prefix="kvbench-"))
    procs = Processes()

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    old_int = signal.signal(
        signal.SIGINT, signal.default_int_handler
    )  # even if started ignoring it
    try:
        yield folder, procs
    finally:
        procs.close()
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        if keep:
            log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def base_tree(folder: Path, ref: str) -> Path:
    """Commit ``ref`` of this repository unpacked into ``folder/base-tree`` (``git archive``):
    the "before" of an interleaved A/B, run from there with that folder first on
    ``PYTHONPATH`` and this tree's virtualenv."""
    archive = subprocess.run(
        ["git", "archive", ref], cwd=REPO, capture_output=True, check=True
    ).stdout
    base = folder / "base-tree"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(base, filter="data")
    return base


def wait_for(check: Callable[[], bool], proc: Proc, timeout: float, what: str) -> None:
    """Poll ``check`` until true; raise with the process log if it dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode}: {proc.log_tail()}"
            )
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(
        f"{proc.name} did not become ready ({what}) in {timeout:.0f}s: {proc.log_tail()}"
    )


def read_url_file(path: Path) -> str | None:
    """The URL a server wrote once it serves, or None."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor and its worker processes)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(x) for x in (task / "children").read_text().split()]
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (one process: :func:`cpu_seconds`)."""
    total = 0.0
    for each in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(each)
    return total


def tree_rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` and its live descendants, in KiB."""
    total = 0
    for each in process_tree(pid):
        with contextlib.suppress(OSError, KeyError):
            total += rss_kib(each)[0]
    return total


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def loadavg() -> float:
    """The 1-minute load average (other engineers share the machine)."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def https_json(
    url: str,
    *,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 10,
) -> Any:
    """A small HTTPS request for setup work (not for measuring)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    if context is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(req, context=context, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


# ------------------------------------------------------------------------------ ab


@dataclass
class AbResult:
    """What one ab run reported (latencies in ms)."""

    target: str
    complete: int
    failed: int
    non2xx: int
    rps: float
    mean_ms: float
    p50_ms: float
    p99_ms: float
    seconds: float
    doc_bytes: int
    server_cpu_us: float = float("nan")  # server CPU per request, when the pid is known
    client_cpu_us: float = float("nan")  # ab's own CPU per request
    server_rss_mib: float = float("nan")  # server VmRSS right after the run
    load: float = float("nan")

    @property
    def ok(self) -> bool:
        """Every request answered 2xx with the expected length."""
        return self.complete > 0 and self.failed == 0 and self.non2xx == 0


_AB_FIELDS = {
    "complete": r"^Complete requests:\s+(\d+)",
    "failed": r"^Failed requests:\s+(\d+)",
    "non2xx": r"^Non-2xx responses:\s+(\d+)",
    "rps": r"^Requests per second:\s+([\d.]+)",
    "mean_ms": r"^Time per request:\s+([\d.]+) \[ms\] \(mean\)$",
    "p50_ms": r"^\s+50%\s+(\d+)",
    "p99_ms": r"^\s+99%\s+(\d+)",
    "seconds": r"^Time taken for tests:\s+([\d.]+)",
    "doc_bytes": r"^Document Length:\s+(\d+)",
}


def parse_ab(target: str, text: str) -> AbResult:
    """Pull the figures out of ab's report."""
    values: dict[str, float] = {}
    for key, pattern in _AB_FIELDS.items():
        match = re.search(pattern, text, re.MULTILINE)
        values[key] = (
            float(match.group(1))
            if match
            else (0.0 if key in ("failed", "non2xx") else float("nan"))
        )
    if values["complete"] != values["complete"]:  # NaN: ab did not finish
        raise RuntimeError(f"ab did not report a result for {target}:\n{text[-1500:]}")
    return AbResult(
        target,
        int(values["complete"]),
        int(values["failed"]),
        int(values["non2xx"]),
        values["rps"],
        values["mean_ms"],
        values["p50_ms"],
        values["p99_ms"],
        values["seconds"],
        int(values["doc_bytes"]) if values["doc_bytes"] == values["doc_bytes"] else 0,
    )


def ab_available() -> bool:
    """Whether ApacheBench is installed."""
    return shutil.which(AB) is not None


@dataclass
class Target:
    """Something ab can load: URL, headers, client certificate, and the server's pid."""

    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    client_pem: Path | None = None
    pid: int | None = None


def ab_argv(
    target: Target,
    *,
    requests: int,
    seconds: float,
    concurrency: int = CONCURRENCY,
    put_file: Path | None = None,
) -> list[str]:
    """``ab -k -c32 -t T -n N -f TLS1.3 -E client.pem -H … URL``: bounded in count and time.

    ``-t`` comes before ``-n`` on purpose: ab's ``-t`` resets the count to 50,000, a later ``-n``
    sets it back, and the run ends at whichever limit comes first.
    """
    argv = [
        AB,
        "-k",
        "-c",
        str(concurrency),
        "-t",
        f"{max(1, round(seconds))}",
        "-n",
        str(requests),
        "-f",
        "TLS1.3",
        "-s",
        "30",
        "-q",
    ]
    if target.client_pem is not None:
        argv += ["-E", str(target.client_pem)]
    for key, value in target.headers.items():
        argv += ["-H", f"{key}: {value}"]
    if put_file is not None:
        argv += ["-u", str(put_file), "-T", "application/json"]
    argv.append(target.url)
    return argv


def run_ab(
    target: Target,
    *,
    requests: int,
    seconds: float,
    concurrency: int = CONCURRENCY,
    put_file: Path | None = None,
) -> AbResult:
    """One bounded ab run (see :func:`ab_argv`), with the server's CPU time and RSS around it."""
    argv = ab_argv(
        target, requests=requests, seconds=seconds, concurrency=concurrency, put_file=put_file
    )
    cpu0 = tree_cpu_seconds(target.pid) if target.pid else None
    load = loadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 and "Complete requests" not in done.stdout:
        raise RuntimeError(f"ab failed on {target.name} ({done.returncode}): {done.stderr[-1500:]}")
    result = parse_ab(target.name, done.stdout)
    if result.complete:
        client = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        result.client_cpu_us = client / result.complete * 1e6
        if cpu0 is not None and target.pid:
            result.server_cpu_us = (tree_cpu_seconds(target.pid) - cpu0) / result.complete * 1e6
    if target.pid:
        with contextlib.suppress(OSError, KeyError):
            result.server_rss_mib = tree_rss_kib(target.pid) / 1024
    result.load = load
    return result


# ------------------------------------------------------------------------------ results table


@dataclass
class Row:
    """One line of the final table."""

    bench: str
    figure: str
    value: str
    target: str = ""
    verdict: str = "info"  # met | missed | info


@dataclass
class Report:
    """Rows collected over the run, plus detail sections and notes printed under the table."""

    rows: list[Row] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self, bench: str, figure: str, value: str, target: str = "", met: bool | None = None
    ) -> None:
        """Add a row; ``met`` None means the figure has no target."""
        verdict = "info" if met is None else ("met" if met else "**missed**")
        self.rows.append(Row(bench, figure, value, target, verdict))

    def markdown(self) -> str:
        """The table as GitHub markdown."""
        lines = ["| # | Figure | Value | Target | Result |", "|---|---|---:|---|---|"]
        for r in sorted(
            self.rows, key=lambda row: row.bench[:1]
        ):  # stable: keeps run order within one
            lines.append(f"| {r.bench} | {r.figure} | {r.value} | {r.target} | {r.verdict} |")
        return "\n".join(lines)


def fmt_ratio(x: float) -> str:
    """A ratio with three decimals (two would print 0.497 as 0.50 next to "≥ 0.5: missed")."""
    return "n/a" if x != x else f"{x:.3f}"


def runs_table(runs: Sequence[tuple[str, AbResult]]) -> str:
    """Every ab run of a benchmark, in the order they ran, as a markdown table."""
    lines = [
        "| round | server | req/s | mean ms | p50 ms | p99 ms | server CPU µs/req | ab CPU µs/req "
        "| server RSS MiB | requests | load avg |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rnd, r in runs:
        lines.append(
            f"| {rnd} | {r.target} | {r.rps:,.0f} | {r.mean_ms:.2f} | {r.p50_ms:.0f} | {r.p99_ms:.0f} | "
            f"{r.server_cpu_us:,.0f} | {r.client_cpu_us:,.0f} | {r.server_rss_mib:.1f} | {r.complete:,} | "
            f"{r.load:.2f} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Plan:
    """How long and how often each benchmark runs (``--quick`` or full)."""

    read_rounds: int = 5  # was 7: the full run also holds issue 18's control-plane benches now
    read_seconds: float = 6
    read_max_requests: int = 400_000
    warmup_seconds: float = 3
    kdf_rounds: int = 4
    kdf_seconds: float = 4
    pbkdf2_repeats: int = 5
    write_rounds: int = 3
    write_count: int = 30_000  # writes per run (creates + updates); the time bound usually ends it
    write_seconds: float = 5
    put_seconds: float = 4
    rss_idle_seconds: float = 2.0
    stream_clients: int = 2000  # issue 18: 2,000 operators on replica A ...
    stream_remote: int = 500  # ... and 500 on replica B (through Redis)
    stream_events: int = 20
    uplink_agents: int = 2000  # issue 18: connecting 2,000 agents
    uplink_seconds: float = 2  # held after connecting (the uplink bench's own window is 60 s)
    uplink_rounds: int = 3  # connect rounds per server, interleaved: one round varied 8-15 s

    @classmethod
    def quick(cls) -> Plan:
        """A short run: fewer, shorter rounds."""
        return cls(
            read_rounds=3,
            read_seconds=3,
            read_max_requests=150_000,
            warmup_seconds=1,
            kdf_rounds=3,
            kdf_seconds=3,
            pbkdf2_repeats=3,
            write_rounds=2,
            write_count=10_000,
            write_seconds=2,
            put_seconds=2,
            stream_clients=1000,  # quick: half the fleet; the full run measures the target's size
            stream_remote=250,
            stream_events=10,
            uplink_agents=100,
            uplink_rounds=1,
        )
