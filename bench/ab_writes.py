"""Benchmark 2's agent writes, this tree against another commit's, interleaved.

``python -m bench.ab_writes [--base main] [--rounds 6] [--seconds 3] [--mode NORMAL]`` exports
``--base`` with ``git archive``, starts one child process per tree (the base's with its folder
first on ``PYTHONPATH``, same virtualenv), each holding an agent opened as benchmark 2 opens it,
and runs :func:`bench.writes.agent_writes` in them in alternating rounds, with one raw sqlite3
loop per round in this process. It prints per round and as medians: writes/s, process CPU per
write, and the CPU per write of the event-loop thread and of the store's writer thread. This is
how docs/performance.md's "Issue 18, round 3: writes at synchronous=NORMAL" was measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import REPO, base_tree, median, workspace


def child(folder: Path, mode: str) -> None:
    """Hold an agent open; run one round per ``COUNT SECONDS`` line on stdin, answer in JSON."""
    from bench.servers import init_agent
    from bench.writes import agent_writes, open_agent

    agent = open_agent(init_agent(folder).data_dir, mode)
    writer = agent.store._writer.ident
    assert writer is not None
    clock = time.pthread_getcpuclockid(writer)
    print("ready", flush=True)
    for rnd, line in enumerate(sys.stdin):
        count, seconds = line.split()
        cpu, loop, wr = time.process_time(), time.thread_time(), time.clock_gettime(clock)
        done, took = asyncio.run(agent_writes(agent, int(count), float(seconds), f"r{rnd}"))
        per = 1e6 / max(done, 1)
        result = {
            "rate": done / took,
            "cpu": (time.process_time() - cpu) * per,
            "loop": (time.thread_time() - loop) * per,
            "writer": (time.clock_gettime(clock) - wr) * per,
        }
        print(json.dumps(result), flush=True)
    agent.close()


def main(argv: list[str] | None = None) -> None:
    """Run the A/B and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.ab_writes", description=__doc__)
    parser.add_argument("--base", default="main", help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--mode", default="NORMAL", choices=["NORMAL", "FULL"])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.mode)
    from bench.writes import raw_writes

    with workspace() as (folder, _procs):
        base = base_tree(folder, args.base)
        trees = {"this": REPO, "base": base}
        kids: dict[str, subprocess.Popen[str]] = {}
        try:
            for name, tree in trees.items():
                env = {**os.environ, "PYTHONPATH": str(tree), "KEYVAULT_LOG_LEVEL": "WARNING"}
                # this file, run as a script: ``bench`` and ``agent`` come from PYTHONPATH's tree
                argv_ = [sys.executable, __file__, "--mode", args.mode]
                kids[name] = subprocess.Popen(
                    [*argv_, "--child", str(folder / name)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tree,
                )  # fmt: skip
                assert kids[name].stdout and kids[name].stdout.readline().strip() == "ready"
            res: dict[str, list[dict[str, float]]] = {"this": [], "base": [], "raw": []}
            for rnd in range(args.rounds):
                for name in ("this", "base") if rnd % 2 == 0 else ("base", "this"):
                    kid = kids[name]
                    assert kid.stdin and kid.stdout
                    kid.stdin.write(f"30000 {args.seconds}\n")
                    kid.stdin.flush()
                    res[name].append(json.loads(kid.stdout.readline()))
                cpu = time.process_time()
                done, took = raw_writes(
                    folder / f"raw-{rnd}.db", args.mode, 30000, args.seconds, 1274
                )
                res["raw"].append(
                    {"rate": done / took, "cpu": (time.process_time() - cpu) / done * 1e6}
                )
                print(
                    f"round {rnd + 1}: "
                    + "  ".join(
                        f"{n} {res[n][-1]['rate']:,.0f}/s {res[n][-1]['cpu']:.0f} µs"
                        for n in ("this", "base", "raw")
                    )
                    + f"  load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        finally:
            for kid in kids.values():
                if kid.stdin:
                    kid.stdin.close()
                kid.wait(timeout=60)
    for name in ("this", "base"):
        rs = res[name]
        ratio = median([r["rate"] / w["rate"] for r, w in zip(rs, res["raw"], strict=True)])
        print(
            f"{name:>5}: {median([r['rate'] for r in rs]):,.0f} writes/s · "
            f"{median([r['cpu'] for r in rs]):.0f} µs CPU/write (loop "
            f"{median([r['loop'] for r in rs]):.0f}, writer {median([r['writer'] for r in rs]):.0f})"
            f" · ÷ raw {ratio:.3f}"
        )
    raw = res["raw"]
    print(f"  raw: {median([r['rate'] for r in raw]):,.0f} writes/s · "
          f"{median([r['cpu'] for r in raw]):.0f} µs CPU/write")  # fmt: skip
    pairs = list(zip(res["this"], res["base"], strict=True))
    print(
        f"CPU per write this / {args.base}: {median([a['cpu'] / b['cpu'] for a, b in pairs]):.3f}"
    )
    print(f"writes/s this / {args.base}: {median([a['rate'] / b['rate'] for a, b in pairs]):.3f}")


if __name__ == "__main__":
    main()
