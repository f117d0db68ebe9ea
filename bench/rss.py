"""Benchmark 4: idle resident memory of a running agent.

A fresh agent (key file, SQLite) is started with ``keyvault agent run``, one 1 KB secret is
created and read 200 times over 4 keep-alive mutual-TLS connections (ab), then the agent idles
for 2 s and ``VmRSS`` (and the peak, ``VmHWM``) is read from ``/proc/PID/status``.

The single binary (``dist/keyvault-agent/keyvault-agent``, the one-folder build, or
``KEYVAULT_BENCH_BINARY``) is measured the same way when it has been built
(``scripts/build_binary.sh``, ~50 s, not done by the bench). Its figure is the sum of the process
and its children (a one-file build was two processes: the bootloader and the Python it unpacks).

``python -m bench.rss --base REF [--rounds N]`` compares this tree's idle RSS with another
commit's (``git archive``, first on ``PYTHONPATH``), the two agents started alternately, and
prints each side's median and the difference: how each change in docs/performance.md's memory
sections was measured. It also prints each side's median start time (``agent run`` started to
``agent.url`` written, polled every 50 ms; a key file, so no passphrase stretching).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench.harness import (
    REPO,
    Plan,
    Processes,
    Report,
    base_tree,
    log,
    read_url_file,
    rss_kib,
    run_ab,
    wait_for,
    workspace,
)
from bench.servers import AgentSetup, agent_target, init_agent, seed_secret, start_agent

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
    """The built agent binary, if there is one (one-folder build: ``dist/keyvault-agent/``)."""
    path = Path(os.environ.get("KEYVAULT_BENCH_BINARY") or REPO / "dist" / "keyvault-agent")
    if path.is_dir():
        path = path / "keyvault-agent"
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
    figure = "single binary (one-folder build): idle RSS after start + 200 reads, idle 2 s"
    if binary is None:
        report.add(
            "4b",
            figure,
            "not measured: no dist/keyvault-agent/keyvault-agent "
            "(scripts/build_binary.sh builds it in ~50 s)",
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


def _idle_rss_mib(
    procs: Processes, setup: AgentSetup, name: str, env: dict[str, str]
) -> tuple[float, float]:
    """One start of ``agent run``: the secret (made on the first start), 200 reads, 2 s idle;
    its VmRSS in MiB and its start time (to ``agent.url``) in seconds."""
    started = time.perf_counter()
    proc = start_agent(procs, setup, name=name, env=env)
    start_s = time.perf_counter() - started
    try:
        secret_id = _secret_ids.get(setup.data_dir) or seed_secret(setup)[0]
        _secret_ids[setup.data_dir] = secret_id
        result = run_ab(
            agent_target(proc, setup, secret_id), requests=200, seconds=10, concurrency=4
        )
        if not result.ok:
            raise RuntimeError(f"the warm-up reads failed: {result}")
        time.sleep(Plan().rss_idle_seconds)
        return rss_kib(proc.pid)[0] / 1024, start_s
    finally:
        procs.close()


_secret_ids: dict[Path, str] = {}


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.rss --base REF``: this tree's idle RSS against REF's, interleaved."""
    parser = argparse.ArgumentParser(prog="python -m bench.rss", description=__doc__)
    parser.add_argument("--base", default="main", help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with workspace() as (folder, procs):
        base = base_tree(folder, args.base)
        trees = {"base": {"PYTHONPATH": str(base)}, "this": {}}
        setups = {name: init_agent(folder / name) for name in trees}
        figures: dict[str, list[float]] = {name: [] for name in trees}
        starts: dict[str, list[float]] = {name: [] for name in trees}
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for name in order:
                mib, start_s = _idle_rss_mib(procs, setups[name], f"{name}-{round_}", trees[name])
                figures[name].append(mib)
                starts[name].append(start_s)
                log(f"round {round_ + 1}: {name} idle {mib:.1f} MiB, started in {start_s:.2f} s")
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, values in figures.items():
        print(f"{name}: median {medians[name]:.1f} MiB ({', '.join(f'{v:.1f}' for v in values)})")
    print(
        f"this - base: {medians['this'] - medians['base']:+.1f} MiB (load {os.getloadavg()[0]:.2f})"
    )
    start_medians = {name: statistics.median(values) for name, values in starts.items()}
    for name, values in starts.items():
        listed = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name}: start to agent.url, median {start_medians[name]:.2f} s ({listed})")


if __name__ == "__main__":
    main()
