"""Per-step costs of the agent's read and write paths, next to cheaper ways to do the same step.

Not part of ``python -m bench``: it backs the suggestions in docs/performance.md with numbers
anyone can reproduce (``.venv/bin/python -m bench.micro``). Everything runs in this process on
a fresh agent folder; the alternatives are swapped in only for the duration of one measurement
(``_aad`` is restored, the product files are never touched). Absolute microseconds depend on
how busy the machine is: compare the lines of one run with each other.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

N = 10_000


def per_call_us(fn: Callable[[], Any], n: int = N) -> float:
    """Median over 5 batches of the microseconds one call takes."""
    fn()
    batch = max(n // 5, 1)
    results = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        results.append((time.perf_counter() - start) / batch * 1e6)
    return statistics.median(results)


async def async_per_call_us(make: Callable[[], Any], n: int = N) -> float:
    """Like :func:`per_call_us` for a coroutine function, awaited inside one running loop."""
    await make()
    batch = max(n // 5, 1)
    results = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(batch):
            await make()
        results.append((time.perf_counter() - start) / batch * 1e6)
    return statistics.median(results)


_RESULTS: dict[str, list[float]] = {}


def line(label: str, us: float) -> None:
    """Record one result (printed as the median over the repetitions by :func:`show`)."""
    _RESULTS.setdefault(label, []).append(us)


def show(title: str) -> None:
    """Print the recorded results, medians over repetitions, and forget them."""
    print(title)
    for label, values in _RESULTS.items():
        print(f"  {label:<72} {statistics.median(values):8.1f} µs")
    _RESULTS.clear()


def read_path(folder: Path) -> None:
    """The steps of GET /secrets/{id} outside aiohttp, and the alternatives."""
    from aiohttp import web

    import agent.crypto as crypto
    from agent.provision import InitOptions, initialise
    from bench.writes import open_agent

    result = initialise(InitOptions(folder / "agent", key_file=folder / "master.key", port=0))
    agent = open_agent(folder / "agent", "FULL")
    try:
        header = "Bearer " + result.admin_token
        meta = asyncio.run(agent.secrets.create("bench/micro", "a" * 1024))
        line(
            "TokenService.authenticate (cached token)",
            asyncio.run(async_per_call_us(lambda: agent.tokens.authenticate(header))),
        )
        line(
            "SecretService.reveal (sealed value cached)",
            asyncio.run(async_per_call_us(lambda: agent.secrets.reveal(meta.id))),
        )
        sealed = agent.secrets._by_id[meta.id].sealed

        def open_value() -> bytes:
            return agent.keys.open(meta.id, meta.version, sealed)

        original = crypto._aad
        memo = functools.lru_cache(maxsize=4096)(original)
        now: list[float] = []
        cached: list[float] = []
        try:
            for _ in range(5):  # interleaved, so both see the same machine
                crypto._aad = original
                now.append(per_call_us(open_value, 2_000))
                crypto._aad = memo
                cached.append(per_call_us(open_value, 2_000))
        finally:
            crypto._aad = original
        line(
            "  of which KeyManager.open (unwrap DEK, AESGCM(dek), decrypt 1 KB)",
            statistics.median(now),
        )
        line(
            "    of which one _aad() call (json.dumps(..., separators=...)); 2 per read",
            per_call_us(lambda: original("value", "vlt_0123456789abcdef0123", meta.id, 1)),
        )
        line(
            "  KeyManager.open if _aad were memoised (functools.lru_cache)",
            statistics.median(cached),
        )
        line(
            "AuditLog.append (no fsync: line write + head pwrite, 2 HMACs)",
            per_call_us(
                lambda: agent.audit.append(
                    op="secrets.read",
                    outcome="ok",
                    status=200,
                    actor="tok_abcdefghijklmnop",
                    target=meta.id,
                    remote="127.0.0.1",
                )
            ),
        )
        value = open_value().decode()
        body = meta.to_json() | {"version": 1, "current_version": 1, "value": value}
        line(
            "web.json_response(read body) (json.dumps of ~1.3 KB + Response)",
            per_call_us(lambda: web.json_response(body, headers={"Cache-Control": "no-store"})),
        )
        meta_part = (
            json.dumps(meta.to_json() | {"current_version": 1})[:-1].encode() + b', "value": '
        )

        def spliced() -> web.Response:
            raw = meta_part + json.dumps(value).encode() + b"}"
            return web.Response(
                body=raw, content_type="application/json", headers={"Cache-Control": "no-store"}
            )

        line(
            "web.Response from cached metadata bytes + json.dumps(value) only", per_call_us(spliced)
        )
        raw_body = json.dumps(body).encode()
        line(
            "web.Response(body=bytes) (what the bare server does)",
            per_call_us(
                lambda: web.Response(
                    body=raw_body,
                    content_type="application/json",
                    headers={"Cache-Control": "no-store"},
                )
            ),
        )
        line(
            "Metrics.observe",
            per_call_us(lambda: agent.metrics.observe("secrets.read", 200, 0.001)),
        )
        issue18(agent, meta, sealed, value)
    finally:
        agent.close()


def issue18(agent: Any, meta: Any, sealed: Any, value: str) -> None:
    """Issue 18's three read-path caches: each step without it (before) and with it (after)."""
    from agent.api.secret_views import ReadPrefixes
    from agent.auth import Policy

    doc = [{"path": "bench/**", "capabilities": ["read", "list"]}, {"path": "other/*",
           "capabilities": ["write"]}]  # fmt: skip
    policy = Policy.parse(doc)

    def checks_before() -> None:  # the read view's three checks, each matching every rule (RE2)
        any(r.regex.fullmatch(meta.name) for r in policy.rules)
        for _ in range(2):
            any(r.grants("read", meta.name) for r in policy.rules)

    def checks_after() -> None:
        policy.sees(meta.name)
        policy.allows("read", meta.name)
        policy.allows("read", meta.name)

    line(
        "issue 18: policy checks of one read (sees + 2 allows), 2 rules, before",
        per_call_us(checks_before),
    )
    line("issue 18:   after (memo on the policy object)", per_call_us(checks_after))

    def open_cold() -> bytes:
        agent.keys.forget(meta.id)
        return agent.keys.open(meta.id, meta.version, sealed)

    line("issue 18: KeyManager.open, DEK unwrapped every time (before)", per_call_us(open_cold))
    line(
        "issue 18:   after (AES-GCM object from the DEK cache)",
        per_call_us(lambda: agent.keys.open(meta.id, meta.version, sealed)),
    )

    def body_before() -> bytes:
        body = meta.to_json()
        body["version"] = 1
        body["current_version"] = meta.version
        body["value"] = value
        return json.dumps(body).encode()

    bodies = ReadPrefixes()
    line(
        "issue 18: read response body, json.dumps of the whole dict (before)",
        per_call_us(body_before),
    )
    line(
        "issue 18:   after (cached head + json.dumps(value))",
        per_call_us(lambda: bodies.body(meta, 1, value)),
    )


def _rows(prefix: str, n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {
            "id": f"sec_{prefix}{i:020d}",
            "name": f"bench/{prefix}/{i}",
            "current_version": 1,
            "description": "",
            "labels": "{}",
            "created_at": "2026-01-01T00:00:00.000000+00:00",
            "updated_at": "2026-01-01T00:00:00.000000+00:00",
        }


def write_path(folder: Path, n: int = 2_000) -> None:
    """One INSERT into the secrets table, written the store's way and cheaper ways."""
    from sqlalchemy import create_engine, event

    from agent.store import schema as t
    from agent.store.db import sqlite_connect
    from agent.store.sql import Connection as StoreConnection

    path = str(folder / "micro.db")
    engine = create_engine("sqlite://", creator=lambda: sqlite_connect(path, "NORMAL"))
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    t.metadata.create_all(engine)
    insert = t.secrets.insert()
    columns = "id, name, current_version, description, labels, created_at, updated_at"
    sql = f"INSERT INTO {t.secrets.name} ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?)"

    def measure(
        label: str, fn: Callable[[Any, dict[str, Any]], Any], savepoint: bool = False
    ) -> None:
        results = []
        for rep in range(3):
            with engine.connect() as conn, conn.begin():
                start = time.perf_counter()
                for row in _rows(f"{len(label)}x{rep}x{os.urandom(3).hex()}", n):
                    if savepoint:
                        sp = conn.begin_nested()
                        fn(conn, row)
                        sp.commit()
                    else:
                        fn(conn, row)
                results.append((time.perf_counter() - start) / n * 1e6)
        line(label, statistics.median(results))

    try:
        measure(
            "conn.execute(table.insert().values(**row))  (agent/secrets.py style)",
            lambda c, r: c.execute(t.secrets.insert().values(**r)),
        )
        measure(
            "  the same inside begin_nested() (Store._commit_batch, batch > 1)",
            lambda c, r: c.execute(t.secrets.insert().values(**r)),
            savepoint=True,
        )
        measure("conn.execute(prebuilt table.insert(), row)", lambda c, r: c.execute(insert, r))
        measure(
            "conn.exec_driver_sql(fixed SQL, tuple)",
            lambda c, r: c.exec_driver_sql(sql, tuple(r.values())),
        )
        measure(
            "sqlite3 cursor of the same connection",
            lambda c, r: c.connection.driver_connection.execute(sql, tuple(r.values())),
        )
        measure(
            "store Connection.execute(fixed SQL, tuple)  (agent/store/sql.py, the agent today)",
            lambda c, r: StoreConnection(
                c.connection.driver_connection, "sqlite", Exception
            ).execute(sql, tuple(r.values())),
        )
    finally:
        engine.dispose()


def main() -> None:
    """Print both tables."""
    folder = Path(tempfile.mkdtemp(prefix="kvbench-micro-"))
    try:
        print(
            f"load average {Path('/proc/loadavg').read_text().split()[0]}; medians of 3 repetitions"
        )
        for rep in range(3):
            read_path(folder / f"read{rep}")
        show("read path (per request):")
        write_path(folder)
        show(
            "write path (per INSERT of a secrets row, 2,000 per transaction, commit not included):"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
