"""Rotation benchmark: the scheduler's pass, and rotations per second end to end.

``python -m bench.rotation [--secrets 100000] [--policies 20] [--rotations 300]``

1. **Scheduling pass**: an agent folder (``keyvault agent init``, SQLite, synchronous FULL) with
   ``--secrets`` live secrets (names in a few folders, 0-3 labels each) and ``--policies``
   policies mixing label and glob selectors. The first pass writes every due date; then five
   passes with nothing to change are timed (:meth:`Scheduler.plan`: one query for names and
   labels, one for the schedule, selector evaluation, the due list). Target: median ≤ 1 s.
2. **Rotations/s**: ``--rotations`` secrets under a ``random`` policy rotated one at a time by
   the engine (pending version, apply/verify, promote; audit entries; ``rotation`` outbox event
   and inventory marker), against plain secret updates (one new version each, inventory marker)
   one at a time in the same run and the same store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_PASS = 1.0


def _policies(count: int) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        selector: dict[str, Any] = {}
        if i % 3 != 1:
            selector["labels"] = {"team": f"team{i % 7}"} if i % 2 else {"env": f"env{i % 4}"}
        if i % 3 != 0:
            selector["name_glob"] = f"app{i % 10}/**" if i % 2 else f"app{i % 10}/db/*"
        out.append({"id": f"pol_{i:04d}", "name": f"p{i}", "version": 1,
                    "body": {"selector": selector, "interval_seconds": 86400 * (1 + i % 30),
                             "notice_seconds": 3600, "rotator": {"type": "random", "settings": {}},
                             "scope": {"all": True}}})  # fmt: skip
    return out


def _open(folder: Path) -> Any:
    from agent.assembly import Agent
    from agent.settings import load_agent_settings

    settings = load_agent_settings(None, folder, log_level="WARNING")
    return Agent.open(settings)


def _fill(agent: Any, count: int) -> None:
    """Insert ``count`` secrets straight into the store (the pass reads only kv_secrets)."""
    rng = random.Random(5)
    now = "2999-01-01T00:00:00+00:00"  # created "in the future": nothing is due, nothing rotates
    rows = []
    for i in range(count):
        labels = {}
        for key, values in (("team", 7), ("env", 4), ("tier", 3)):
            if rng.random() < 0.6:
                labels[key] = f"{key}{rng.randrange(values)}"
        name = f"app{rng.randrange(12)}/{rng.choice(['db', 'web', 'jobs'])}/s{i:06d}"
        rows.append((f"sec_{i:026d}", name, 1, "", json.dumps(labels), now, now))

    def txn(conn: Any) -> None:
        conn.executemany(
            "INSERT INTO kv_secrets (id, name, current_version, description, labels, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    agent.store.write_sync(txn)


async def _set_policies(agent: Any, policies: list[dict[str, Any]]) -> None:
    from agent.uplink import meta

    doc = {"version": "bench", "policies": policies}
    await agent.store.write(lambda c: meta.put(c, meta.POLICIES, doc))


async def bench_pass(folder: Path, secrets: int, policies: int) -> dict[str, float]:
    """Seconds for the first pass and the median of five steady passes."""
    from agent.rotation.scheduler import Scheduler

    agent = await asyncio.to_thread(_open, folder)
    try:
        await asyncio.to_thread(_fill, agent, secrets)
        await _set_policies(agent, _policies(policies))
        sched = Scheduler(agent.rotation)
        start = time.perf_counter()
        first = await sched.plan()
        first_s = time.perf_counter() - start
        times = []
        for _ in range(5):
            start = time.perf_counter()
            plan = await sched.plan()
            times.append(time.perf_counter() - start)
            assert plan.added == 0 and not plan.due
        return {
            "first": first_s,
            "median": statistics.median(times),
            "governed": first.governed_count,
        }
    finally:
        await asyncio.to_thread(agent.close)


async def bench_rotations(folder: Path, count: int) -> dict[str, float]:
    """Rotations/s through the engine vs plain updates/s, one at a time, same store."""
    from agent.generate import GeneratorSpec

    agent = await asyncio.to_thread(_open, folder)
    try:
        agent.secrets.feed.track()
        await _set_policies(agent, [{"id": "pol_r", "name": "r", "version": 1,
                                      "body": {"selector": {"name_glob": "rot/*"},
                                               "interval_seconds": 86400, "notice_seconds": 0,
                                               "rotator": {"type": "random", "settings": {}},
                                               "scope": {"all": True}}}])  # fmt: skip
        rot = [await agent.secrets.create(f"rot/{i}", "v") for i in range(count)]
        plain = [await agent.secrets.create(f"plain/{i}", "v") for i in range(count)]
        engine = agent.rotation
        policy = await engine.governing(rot[0])
        spec = GeneratorSpec()
        rates: dict[str, list[float]] = {"engine": [], "update": []}
        for _ in range(3):  # interleaved rounds
            start = time.perf_counter()
            for meta in rot:
                await engine.rotate(meta.id, policy, actor="bench")
            rates["engine"].append(count / (time.perf_counter() - start))
            start = time.perf_counter()
            for meta in plain:
                await agent.secrets.update(meta.id, value=spec.generate())
            rates["update"].append(count / (time.perf_counter() - start))
        return {k: statistics.median(v) for k, v in rates.items()}
    finally:
        await asyncio.to_thread(agent.close)


def main() -> None:
    """Run both parts and print one table."""
    parser = argparse.ArgumentParser(prog="python -m bench.rotation")
    parser.add_argument("--secrets", type=int, default=100_000)
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--rotations", type=int, default=300)
    args = parser.parse_args()
    from tests.conftest import init_agent_dir

    with tempfile.TemporaryDirectory(prefix="kvbench-rot-") as tmp:
        a = init_agent_dir(Path(tmp) / "pass").path
        b = init_agent_dir(Path(tmp) / "rot").path
        passes = asyncio.run(bench_pass(a, args.secrets, args.policies))
        rates = asyncio.run(bench_rotations(b, args.rotations))
    verdict = "ok" if passes["median"] <= TARGET_PASS else "OVER TARGET"
    rows = [
        ("scheduling pass, first (writes due dates)", f"{passes['first']:.3f} s", ""),
        (
            f"scheduling pass, median of 5 ({args.secrets:,} secrets × {args.policies} policies, "
            f"{int(passes['governed']):,} governed)",
            f"{passes['median']:.3f} s",
            f"≤ {TARGET_PASS:.0f} s: {verdict}",
        ),
        ("random rotations/s (engine, audit, outbox; one at a time)", f"{rates['engine']:.0f}", ""),
        (
            "plain secret updates/s (one at a time, same store)",
            f"{rates['update']:.0f}",
            f"rotation = {rates['engine'] / rates['update']:.2f}× update",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{width}} | {'result':>9} | note")
    print(f"|{'-' * (width + 2)}|{'-' * 11}|-----")
    for name, value, note in rows:
        print(f"| {name:<{width}} | {value:>9} | {note}")


if __name__ == "__main__":
    main()
