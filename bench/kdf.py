"""Benchmark 3: the master key is derived once, so PBKDF2 iterations must not slow reads.

Two agents are made with ``keyvault agent init --passphrase --iterations N`` (600,000 and
100,000; the passphrase comes from ``KEYVAULT_MASTER_PASSPHRASE``). Each round starts both
afresh with the same variable (600k first, then 100k first, …), warms them up and has them serve
the 1 KB read of benchmark 1 back to back; the figure is the median of the per-round req/s ratios
600k / 100k. The one-time unlock cost is
timed directly (``agent.crypto.derive_master_key``, the function the agent unlocks with), and
each agent's start-to-serving time is shown alongside.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.harness import (
    Plan,
    Proc,
    Processes,
    Report,
    Target,
    fmt_ratio,
    log,
    median,
    runs_table,
)
from bench.read_tls import fresh_rounds, paired_ratio, summary
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
    setups = {
        f"agent-{n // 1000}k": init_agent(
            folder / f"agent-{n // 1000}k", passphrase=passphrase, iterations=n
        )
        for n in LEVELS
    }
    starts: dict[str, list[float]] = {name: [] for name in setups}
    secrets: dict[str, str] = {}
    running: list[Proc] = []

    def start(rnd: int) -> list[Target]:
        targets = {}
        for name in list(setups) if rnd % 2 else list(setups)[::-1]:  # who starts first alternates
            setup = setups[name]
            began = time.perf_counter()
            proc = start_agent(procs, setup, name=name)
            starts[name].append(time.perf_counter() - began)
            if name not in secrets:
                secrets[name], _ = seed_secret(setup)
            running.append(proc)
            targets[name] = agent_target(proc, setup, secrets[name], name=name)
        return [targets[name] for name in setups]  # fresh_rounds reverses every second round

    def stop(rnd: int) -> None:
        while running:
            procs.stop(running.pop())

    results, order = fresh_rounds(plan.kdf_rounds, plan, plan.kdf_seconds, "kdf", start, stop)
    for name in setups:
        ready = median(starts[name])
        report.add("3", f"{name}: start to serving (includes the unlock; median)", f"{ready:.2f} s")
        log(f"{name} serving after {ready:.2f} s (median)")
    for name in setups:
        report.add("3", f"{name}: read 1 KB secret, mTLS 1.3, c32", summary(results[name]))
    names = list(setups)
    ratio = paired_ratio(results, names[0], names[1])
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
