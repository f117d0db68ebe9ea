"""Agent against agent: this tree's read path against another commit's, interleaved.

``python -m bench.ab [--base main] [--rounds 5] [--seconds 4]`` exports ``--base`` with
``git archive`` into a temp folder and, for every round, starts an agent from each tree afresh
(the base one with that folder first on ``PYTHONPATH``, same virtualenv; which goes first
alternates) and the bare server, and runs benchmark 1's ab line on them back to back
(:func:`bench.read_tls.fresh_rounds`). It prints medians and the per-round ratios, chiefly
server CPU per read, which a busy machine disturbs least. This is how docs/performance.md's "before" of issue 18
was measured.
"""

from __future__ import annotations

import argparse

from bench.harness import Plan, Target, base_tree, median, workspace
from bench.read_tls import fresh_rounds
from bench.servers import agent_target, init_agent, seed_secret, start_agent, start_bare


def main(argv: list[str] | None = None) -> None:
    """Run the A/B and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--base", default="main", help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4)
    args = parser.parse_args(argv)
    with workspace() as (folder, procs):
        base = base_tree(folder, args.base)
        envs = {"this": None, "base": {"PYTHONPATH": str(base)}}
        setups = {name: init_agent(folder / name) for name in envs}
        secrets: dict[str, tuple[str, bytes]] = {}

        def start(rnd: int) -> list[Target]:
            targets = {}
            for name in envs if rnd % 2 else list(envs)[::-1]:  # who starts first alternates
                setup = setups[name]
                proc = start_agent(procs, setup, name=name, env=envs[name])
                if name not in secrets:
                    secrets[name] = seed_secret(setup)
                targets[name] = agent_target(proc, setup, secrets[name][0], name=name)
            sid, body = secrets["this"]
            this = setups["this"]
            bare = start_bare(procs, folder, this.tls, body, this.client_pem(), sid)
            return [targets["this"], targets["base"], bare]

        res, _ = fresh_rounds(
            args.rounds, Plan.quick(), args.seconds, "ab", start, lambda _rnd: procs.close()
        )
        for n in ("this", "base", "bare"):
            rs = res[n]
            print(
                f"{n:>5}: {median([r.rps for r in rs]):>8,.0f} req/s · "
                f"{median([r.server_cpu_us for r in rs]):.0f} µs CPU/read · "
                f"p99 {median([r.p99_ms for r in rs]):.0f} ms"
            )

        def ratio(a: str, b: str, attr: str) -> float:
            pairs = zip(res[a], res[b], strict=True)
            return median([getattr(x, attr) / getattr(y, attr) for x, y in pairs])

        print(f"CPU per read this / {args.base}: {ratio('this', 'base', 'server_cpu_us'):.3f}")
        print(f"req/s this / bare: {ratio('this', 'bare', 'rps'):.3f}")
        print(f"req/s {args.base} / bare: {ratio('base', 'bare', 'rps'):.3f}")


if __name__ == "__main__":
    main()
