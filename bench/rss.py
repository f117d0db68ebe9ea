"""Benchmark 4: idle resident memory of a running agent.

A fresh agent (key file, SQLite) is started with ``keyvault agent run``, one 1 KB secret is
created and read 200 times over 4 keep-alive mutual-TLS connections (ab), then the agent idles
for 2 s and ``VmRSS`` (and the peak, ``VmHWM``) is read from ``/proc/PID/status``.

The single-file binary (``dist/keyvault-agent``, or ``KEYVAULT_BENCH_BINARY``) is measured the
same way when it has been built (``scripts/build_binary.sh``, ~50 s, not done by the bench). A
PyInstaller one-file binary is two processes (the bootloader and the Python it unpacks), so its
figure is the sum of both.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.harness import (
    REPO,
    Plan,
    Processes,
    Report,
    log,
    read_url_file,
    rss_kib,
    run_ab,
    wait_for,
)
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
    run_binary(folder, procs, plan, report)


def binary_path() -> Path | None:
    """The built single-file agent, if there is one."""
    path = Path(os.environ.get("KEYVAULT_BENCH_BINARY") or REPO / "dist" / "keyvault-agent")
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _tree_rss_kib(pid: int) -> int:
    """VmRSS of a process plus its children's (the one-file bootloader and its Python)."""
    total = rss_kib(pid)[0]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += rss_kib(int(child))[0]
    return total


def run_binary(folder: Path, procs: Processes, plan: Plan, report: Report) -> None:
    """The single binary's idle RSS, measured like the agent's; a row saying why not otherwise."""
    binary = binary_path()
    figure = "single-file binary: idle RSS after start + 200 reads, idle 2 s (both processes)"
    if binary is None:
        report.add(
            "4b",
            figure,
            "not measured: no dist/keyvault-agent (scripts/build_binary.sh builds it in ~50 s)",
        )
        return
    setup = init_agent(folder / "agent-bin")
    url_file = setup.data_dir / "agent.url"
    proc = procs.start(
        "agent-bin",
        [str(binary), "run", "--data-dir", str(setup.data_dir)],
        log_file=folder / "agent-bin.log",
        env=setup.env(),
    )
    wait_for(lambda: read_url_file(url_file) is not None, proc, 60, "agent.url")
    secret_id, _ = seed_secret(setup)
    result = run_ab(agent_target(proc, setup, secret_id), requests=200, seconds=10, concurrency=4)
    if not result.ok:
        raise RuntimeError(f"the binary's warm-up reads failed: {result}")
    time.sleep(plan.rss_idle_seconds)
    rss = _tree_rss_kib(proc.pid)
    report.add(
        "4b", figure, f"{rss / 1024:.1f} MiB", f"≤ {TARGET_MIB} MiB", rss / 1024 <= TARGET_MIB
    )
    procs.close()
