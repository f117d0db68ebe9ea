"""Benchmark 2: durable creates and updates through the agent's store layer vs raw sqlite3.

**Agent**: an agent folder made by ``keyvault agent init`` is opened in this process exactly as
the daemon does (:meth:`agent.assembly.Agent.open`, with ``storage.sqlite_synchronous`` set to
FULL or NORMAL), and 32 asyncio tasks call :meth:`SecretService.create` then
:meth:`SecretService.update` (a new 1 KB version) until the run's count or time is reached. Each
call returns only after its group commit, so every counted write is as durable as the
``synchronous`` level makes it. The HTTP layer is left out on purpose (benchmark 1's agent gets
an HTTP ``PUT`` run as well, row 2h).

**Raw sqlite3**: one connection, WAL, the same ``synchronous``, ``BEGIN; INSERT; COMMIT`` per
write of a row as large as what one agent write stores (sealed value + wrapped DEK + metadata).

Rounds interleave agent FULL, raw FULL, agent NORMAL, raw NORMAL; ratios are medians of the
per-round ratios.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import CONCURRENCY, Plan, Report, fmt_ratio, log, median, secret_value
from bench.servers import init_agent

if TYPE_CHECKING:
    from agent.assembly import Agent

MODES = ("FULL", "NORMAL")
TARGET = 0.5
META_BYTES = 160  # the secrets row besides the value: id, name, times, labels, description


def open_agent(data_dir: Path, synchronous: str) -> Agent:
    """``Agent.open`` on the folder with the given SQLite synchronous level."""
    from agent.assembly import Agent
    from agent.provision import CONFIG_NAME
    from agent.settings import AgentSettings
    from common.typedconf import load_settings

    settings = load_settings(
        AgentSettings,
        data_dir / CONFIG_NAME,
        {"storage": {"sqlite_synchronous": synchronous}, "log_level": "WARNING"},
    )
    return Agent.open(settings)


async def agent_writes(agent: Agent, count: int, seconds: float, tag: str) -> tuple[int, float]:
    """32 tasks: create a secret, then update it; returns (writes done, wall seconds)."""
    values = (secret_value(), secret_value())
    state = {"claimed": 0, "done": 0}
    deadline = time.perf_counter() + seconds

    async def worker(task: int) -> None:
        i = 0
        while state["claimed"] + 2 <= count and time.perf_counter() < deadline:
            state["claimed"] += 2
            meta = await agent.secrets.create(f"bench/{tag}/t{task}/s{i}", values[0])
            await agent.secrets.update(meta.id, value=values[1])
            state["done"] += 2
            i += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))
    return state["done"], time.perf_counter() - start


def raw_writes(
    path: Path, synchronous: str, count: int, seconds: float, row_bytes: int
) -> tuple[int, float]:
    """``BEGIN; INSERT; COMMIT`` per write on one WAL connection; returns (writes, seconds)."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(f"PRAGMA synchronous={synchronous}")
        con.execute(
            "CREATE TABLE IF NOT EXISTS w (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
            "created_at TEXT NOT NULL, blob BLOB NOT NULL)"
        )
        blob = os.urandom(row_bytes)
        done = 0
        start = time.perf_counter()
        deadline = start + seconds
        base = os.urandom(6).hex()
        while done < count and time.perf_counter() < deadline:
            con.execute("BEGIN")
            con.execute(
                "INSERT INTO w VALUES (?, ?, ?, ?)",
                (
                    f"sec_{base}{done:020d}",
                    f"bench/raw/{base}/{done}",
                    "2026-01-01T00:00:00.000000+00:00",
                    blob,
                ),
            )
            con.execute("COMMIT")
            done += 1
        return done, time.perf_counter() - start
    finally:
        con.close()


def run(folder: Path, plan: Plan, report: Report) -> None:
    """Run benchmark 2, adding rows to ``report``."""
    agents: dict[str, Agent] = {}
    try:
        for mode in MODES:
            agents[mode] = open_agent(init_agent(folder / f"store-{mode.lower()}").data_dir, mode)
        sample = agents["FULL"].keys.seal("sec_" + "a" * 26, 1, secret_value().encode())
        row_bytes = len(sample.wrapped_dek) + len(sample.ciphertext) + META_BYTES
        rates: dict[str, list[float]] = {
            f"{who} {m}": [] for m in MODES for who in ("agent", "raw")
        }
        cpus: dict[str, list[float]] = {key: [] for key in rates}
        for rnd in range(1, plan.write_rounds + 1):
            for mode in MODES:
                cpu = time.process_time()
                done, took = asyncio.run(
                    agent_writes(agents[mode], plan.write_count, plan.write_seconds, f"r{rnd}")
                )
                cpus[f"agent {mode}"].append((time.process_time() - cpu) / max(done, 1) * 1e6)
                rates[f"agent {mode}"].append(done / took)
                raw_path = folder / f"raw-{mode.lower()}-{rnd}.db"
                cpu = time.process_time()
                rdone, rtook = raw_writes(
                    raw_path, mode, plan.write_count, plan.write_seconds, row_bytes
                )
                cpus[f"raw {mode}"].append((time.process_time() - cpu) / max(rdone, 1) * 1e6)
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{raw_path}{suffix}").unlink(missing_ok=True)
                rates[f"raw {mode}"].append(rdone / rtook)
                log(
                    f"writes round {rnd}/{plan.write_rounds} {mode:<6} agent {done / took:>8,.0f}/s ({done} in "
                    f"{took:.1f}s)  raw {rdone / rtook:>8,.0f}/s ({rdone} in {rtook:.1f}s)"
                )
    finally:
        for agent in agents.values():
            agent.close()
    for mode in MODES:
        a, r = rates[f"agent {mode}"], rates[f"raw {mode}"]
        ratio = median([x / y for x, y in zip(a, r, strict=True)])
        report.add(
            "2",
            f"store layer (SecretService on Store), 32 tasks create+update 1 KB, WAL "
            f"synchronous={mode}",
            f"{median(a):,.0f} writes/s · {median(cpus[f'agent {mode}']):,.0f} µs CPU/write",
        )
        report.add(
            "2",
            f"raw sqlite3 INSERT+COMMIT per write, {row_bytes} B rows, synchronous={mode}",
            f"{median(r):,.0f} writes/s · {median(cpus[f'raw {mode}']):,.0f} µs CPU/write",
        )
        report.add(
            "2",
            f"ratio agent / raw sqlite3 writes/s ({mode})",
            fmt_ratio(ratio),
            f"≥ {TARGET}",
            ratio >= TARGET,
        )
