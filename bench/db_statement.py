"""What one single-row SELECT costs the control plane's process, three ways.

``.venv/bin/python -m bench.db_statement [--url postgresql+psycopg://postgres@127.0.0.1/postgres]``

Not part of ``python -m bench``: it backs the connect-path section of docs/performance.md. The
same one-row query runs ``--n`` times on each of: a SQLAlchemy connection that opens a
transaction (``engine.connect()``: BEGIN, SELECT, ROLLBACK on return), the same engine in
autocommit mode (``control_plane.db.autocommit``: the SELECT alone), and the raw psycopg
connection (no SQLAlchemy). Rounds are interleaved; the figures are the process's CPU and the
wall time per statement, medians over the rounds. Nothing is written; only catalog tables are
read.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from control_plane.db import autocommit, make_engine


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(run: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    """(CPU µs, wall µs) per call of ``run`` over ``n`` calls."""
    cpu0, wall0 = _cpu(), time.perf_counter()
    for _ in range(n):
        await run()
    return (_cpu() - cpu0) / n * 1e6, (time.perf_counter() - wall0) / n * 1e6


async def _main(url: str, n: int, rounds: int) -> None:
    engine = make_engine(url)
    single = autocommit(engine)
    pg = sa.table("pg_database", sa.column("datname"), sa.column("oid"))

    def query() -> Any:
        return sa.select(pg.c.oid).where(pg.c.datname == "postgres")

    async def in_transaction() -> None:
        async with engine.connect() as conn:
            (await conn.execute(query())).first()

    async def in_autocommit() -> None:
        async with single.connect() as conn:
            (await conn.execute(query())).first()

    async with engine.connect() as holder:
        raw: Any = (await holder.get_raw_connection()).driver_connection
        await holder.commit()
        await raw.set_autocommit(True)

        async def driver_only() -> None:
            cur = await raw.execute("SELECT oid FROM pg_database WHERE datname = %s", ("postgres",))
            await cur.fetchone()

        ways = {
            "SQLAlchemy, transaction": in_transaction,
            "SQLAlchemy, autocommit": in_autocommit,
            "psycopg only": driver_only,
        }
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        for way in ways.values():
            await _measure(way, 50)  # warm: pool, statement caches, prepared statements
        for _ in range(rounds):
            for name, way in ways.items():
                figures[name].append(await _measure(way, n))
        await raw.set_autocommit(False)
    await engine.dispose()
    print(f"one-row SELECT, {rounds} interleaved rounds of {n}; medians per statement")
    print("| way | CPU µs | wall µs |\n|---|---|---|")
    for name, values in figures.items():
        cpu = statistics.median(v[0] for v in values)
        wall = statistics.median(v[1] for v in values)
        print(f"| {name} | {cpu:.0f} | {wall:.0f} |")


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run."""
    p = argparse.ArgumentParser(prog="python -m bench.db_statement", description=__doc__)
    p.add_argument("--url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--n", type=int, default=1000, help="statements per round and way")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    asyncio.run(_main(args.url, args.n, args.rounds))


if __name__ == "__main__":
    main()
