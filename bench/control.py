"""Benchmarks 5 and 6 of ``python -m bench``: the control plane's targets of issue 18.

* **5, operator stream fan-out:** :mod:`bench.stream` (2,000 operators on replica A + 500 on
  replica B through Redis, against a bare aiohttp broadcast loop with as many clients of the same
  kind, events to the two interleaved in the same run). Target: the control plane's p95 ≤ the
  bare loop's p95.
* **6, agents connecting:** :mod:`bench.uplink` with ``--connect-only`` (real enrollments, one
  mutual-TLS WebSocket per agent, ``hello`` → ``welcome``), against a bare aiohttp WebSocket
  server with the same TLS and client chains, in interleaved rounds (``Plan.uplink_rounds``).
  Target: the median time to connect all ≤ 1.5 × the bare server's median.

Both run in this process (their servers are child processes they stop themselves, also on
Ctrl+C or SIGTERM) and hand their figures back as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import stream, uplink
from bench.harness import Plan, Report, fmt_ratio, log

CONNECT_TARGET = 1.5


def run_stream(folder: Path, plan: Plan, report: Report) -> None:
    """Benchmark 5: rows for the stream fan-out."""
    out = folder / "stream.json"
    argv = ["--clients", str(plan.stream_clients), "--remote", str(plan.stream_remote)]
    argv += ["--events", str(plan.stream_events), "--json", str(out)]
    log(
        f"stream: {plan.stream_clients} + {plan.stream_remote} operators, {plan.stream_events} events"
    )
    stream.main(argv)
    f = _load(out)
    clients = f"{f['clients']:,} + {f['remote']:,} clients (B through Redis), {f['events']} events"
    report.add(
        "5",
        f"control plane: operator stream fan-out, {clients}",
        f"p50 {f['cp_p50_ms']:.0f} ms · p95 {f['cp_p95_ms']:.0f} ms · missing {f['cp_missing']}"
        f" · {f['cp_rss_kib_per_conn']:.1f} KiB/conn",
    )
    report.add(
        "5",
        "bare aiohttp broadcast loop, same clients",
        f"p50 {f['bare_p50_ms']:.0f} ms · p95 {f['bare_p95_ms']:.0f} ms · missing {f['bare_missing']}",
    )
    report.add(
        "5",
        "server CPU per event: control plane (A + B, the POST included) · bare loop",
        f"{f['cp_cpu_ms_per_event']:.1f} ms · {f['bare_cpu_ms_per_event']:.1f} ms",
    )
    ratio = f["cp_p95_ms"] / f["bare_p95_ms"] if f["bare_p95_ms"] else float("nan")
    full = f["clients"] >= 2000 and f["remote"] >= 500
    report.add(
        "5",
        "ratio stream p95 control plane / bare",
        fmt_ratio(ratio),
        "≤ 1 (p95 ≤ bare's), nothing missing"
        + ("" if full else " (quick run: fewer clients; the target is for 2,000 + 500)"),
        ratio <= 1 and f["cp_missing"] == 0,
    )


def run_uplink(folder: Path, plan: Plan, report: Report) -> None:
    """Benchmark 6: rows for connecting the fleet."""
    out = folder / "uplink.json"
    n = plan.uplink_agents
    log(f"uplink: enrolling and connecting {n} agents")
    argv = ["--agents", str(n), "--duration", str(plan.uplink_seconds), "--connect-only"]
    argv += ["--interval", "5"]  # the first heartbeats land sooner: a shorter wait after connecting
    argv += ["--rounds", str(plan.uplink_rounds)]  # medians of interleaved rounds
    uplink.main([*argv, "--json", str(out)])
    f = _load(out)
    cp, bare = f["cp"], f["bare"]
    report.add(
        "6",
        f"control plane: connect {n:,} agents (mTLS WebSocket, hello → welcome)",
        f"{cp['connect_s']:.1f} s (median; rounds {_rounds(cp)}) · {cp['alive']:,}/{n:,} held · "
        f"{cp['rss_per_conn_kib']:.1f} KiB/conn",
    )
    report.add(
        "6",
        "bare aiohttp WebSocket server, same TLS and client chains",
        f"{bare['connect_s']:.1f} s (median; rounds {_rounds(bare)}) · {bare['alive']:,}/{n:,} held",
    )
    ratio = cp["connect_s"] / bare["connect_s"] if bare["connect_s"] else float("nan")
    note = "" if n >= 2000 else f" (quick run: {n} agents; the target is for 2,000)"
    report.add(
        "6",
        "ratio connect time control plane / bare",
        fmt_ratio(ratio),
        f"≤ {CONNECT_TARGET}{note}",
        ratio <= CONNECT_TARGET and cp["alive"] == n,
    )


def _rounds(side: dict[str, Any]) -> str:
    """Each interleaved round's connect time, in order."""
    return ", ".join(f"{x:.1f}" for x in side.get("rounds_s", [side["connect_s"]]))


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise RuntimeError(f"the benchmark wrote no figures ({path.name}); see its output above")
    return dict(json.loads(path.read_text(encoding="utf-8")))
