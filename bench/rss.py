"""Benchmark 4: idle resident memory of a running agent.

A fresh agent (key file, SQLite) is started with ``keyvault agent run``, one 1 KB secret is
created and read 200 times over 4 keep-alive mutual-TLS connections (ab), then the agent idles
for 2 s and ``VmRSS`` (and the peak, ``VmHWM``) is read from ``/proc/PID/status``.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.harness import Plan, Processes, Report, log, rss_kib, run_ab
from bench.servers import agent_target, init_agent, seed_secret, start_agent

TARGET_MIB = 64


def run(folder: Path, procs: Processes, plan: Plan, report: Report) -> None:
    """Run benchmark 4, adding a row to ``report``."""
    setup = init_agent(folder / "agent-rss")
    proc = start_agent(procs, setup, name="agent-rss")
    started_rss, _ = rss_kib(proc.pid)
    secret_id, _ = seed_secret(setup)
    result = run_ab(agent_target(proc, setup, secret_id), requests=200, seconds=10, concurrency=4)
    if not result.ok:
        raise RuntimeError(f"the warm-up reads failed: {result}")
    time.sleep(plan.rss_idle_seconds)
    rss, hwm = rss_kib(proc.pid)
    log(
        f"agent RSS {rss / 1024:.1f} MiB (at start {started_rss / 1024:.1f}, peak {hwm / 1024:.1f})"
    )
    report.add(
        "4",
        "idle agent RSS after start + 200 reads, idle 2 s (peak)",
        f"{rss / 1024:.1f} MiB ({hwm / 1024:.1f} MiB)",
        f"≤ {TARGET_MIB} MiB",
        rss / 1024 <= TARGET_MIB,
    )
    procs.close()
