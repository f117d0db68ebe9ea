"""Benchmark 3: the master key is derived once, so PBKDF2 iterations must not slow reads.

Two agents are made with ``keyvault agent init --passphrase --iterations N`` (600,000 and
100,000; the passphrase comes from ``KEYVAULT_MASTER_PASSPHRASE``) and started with the same
variable. Both serve the 1 KB read of benchmark 1 in interleaved rounds (600k, 100k, 600k, …);
the figure is the median of the per-round req/s ratios 600k / 100k. The one-time unlock cost is
timed directly (``agent.crypto.derive_master_key``, the function the agent unlocks with), and
each agent's start-to-serving time is shown alongside.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.harness import Plan, Processes, Report, fmt_ratio, log, median, runs_table
from bench.read_tls import measure, paired_ratio, summary
from bench.servers import agent_target, init_agent, seed_secret, start_agent

LEVELS = (600_000, 100_000)
TARGET = 0.95


def pbkdf2_ms(iterations: int, repeats: int) -> float:
    """Median milliseconds of one passphrase unlock derivation at ``iterations``."""
    from agent.crypto import KeySource, derive_master_key

    source = KeySource.from_passphrase("correct horse battery staple")
    times = []
    for _ in range(repeats):
        salt = os.urandom(16)
        start = time.perf_counter()
        derive_master_key(source, "pbkdf2-sha256", iterations, salt)
        times.append((time.perf_counter() - start) * 1000)
    return median(times)


def run(folder: Path, procs: Processes, plan: Plan, report: Report) -> None:
    """Run benchmark 3, adding rows to ``report``."""
    for iterations in LEVELS:
        report.add(
            "3",
            f"one-time unlock: PBKDF2-HMAC-SHA256 at {iterations:,} iterations (direct)",
            f"{pbkdf2_ms(iterations, plan.pbkdf2_repeats):,.0f} ms",
        )
    passphrase = "bench-" + os.urandom(12).hex()
    targets = []
    for iterations in LEVELS:
        name = f"agent-{iterations // 1000}k"
        setup = init_agent(folder / name, passphrase=passphrase, iterations=iterations)
        start = time.perf_counter()
        proc = start_agent(procs, setup, name=name)
        ready = time.perf_counter() - start
        secret_id, _ = seed_secret(setup)
        targets.append(agent_target(proc, setup, secret_id, name=name))
        report.add("3", f"{name}: start to serving (includes the unlock)", f"{ready:.2f} s")
        log(f"{name} serving after {ready:.2f} s")
    results, order = measure(targets, plan, plan.kdf_rounds, plan.kdf_seconds, "kdf")
    for t in targets:
        report.add("3", f"{t.name}: read 1 KB secret, mTLS 1.3, c32", summary(results[t.name]))
    ratio = paired_ratio(results, targets[0].name, targets[1].name)
    report.add(
        "3",
        "ratio read req/s 600k / 100k iterations",
        fmt_ratio(ratio),
        f"≥ {TARGET}",
        ratio >= TARGET,
    )
    report.sections.append(
        (
            f"Benchmark 3 runs ({plan.kdf_rounds} rounds × {plan.kdf_seconds:.0f} s)",
            runs_table(order),
        )
    )
    procs.close()
