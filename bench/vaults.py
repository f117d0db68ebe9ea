"""Benchmark of ``GET /api/v1/vaults`` for an organisation with 10,000 vaults: ``python -m bench.vaults``.

Starts one control plane in its production configuration (``control-plane run`` on a fresh
PostgreSQL database and a private Redis prefix), creates the organisation and its owner with
``control-plane init``, inserts ``--vaults`` vaults for it directly in the database (as
``tests/control_plane/test_scale.py`` does), logs in, and pages through
``GET /api/v1/vaults?limit=100`` with one keep-alive connection, ``--passes`` times, timing each
page client-side. Baselines in the same run, interleaved pass by pass:

* **HTTP floor**: the same client and connection on ``GET /api/v1/health`` (as many requests);
* **DB floor**: the same keyset page query run directly with psycopg (one connection).

Everything binds 127.0.0.1; the server is stopped, the database dropped and the Redis prefix's
keys deleted at the end. Bounded: ``passes × (vaults / 100)`` requests of each kind.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bench.stream import CLI, PASSWORD, Fleet, _database, _free_port, _percentile, _wait_http

PAGE = 100
TARGET_P99_MS = 50.0
PAGE_SQL = (
    "SELECT * FROM cp_vaults WHERE org_id = %s AND (%s::text IS NULL OR id > %s) "
    "ORDER BY id LIMIT %s"
)


def _insert_vaults(conninfo: str, org_id: str, n: int) -> None:
    import psycopg

    from control_plane.db import new_id

    now = datetime.now(UTC)
    rows = [
        (
            new_id("vlt"),
            org_id,
            f"v{i}",
            "0.1.0",
            "0" * 64,
            "-",
            format(i + 1, "x"),
            now,
            new_id("enr"),
            now,
            now if i % 3 else None,
        )
        for i in range(n)
    ]
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO cp_vaults (id, org_id, name, agent_version, csr_sha256, cert_pem, "
            "cert_serial, cert_not_after, enrollment_token_id, created_at, last_heartbeat_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
        conn.commit()
        conn.execute("ANALYZE cp_vaults")  # what autovacuum would have done by now


async def _api_pass(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], expected: int
) -> list[float]:
    timings: list[float] = []
    cursor: str | None = None
    seen = 0
    while True:
        path = f"{url}/api/v1/vaults?limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
        started = time.perf_counter()
        async with session.get(path, headers=headers) as resp:
            page = await resp.json()
        timings.append(time.perf_counter() - started)
        assert resp.status == 200, page
        seen += len(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            assert seen == expected, (seen, expected)
            return timings


async def _health_pass(session: aiohttp.ClientSession, url: str, count: int) -> list[float]:
    timings: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        async with session.get(f"{url}/api/v1/health") as resp:
            await resp.read()
        timings.append(time.perf_counter() - started)
        assert resp.status == 200
    return timings


def _db_pass(conn: Any, org_id: str) -> list[float]:
    timings: list[float] = []
    after: str | None = None
    while True:
        started = time.perf_counter()
        rows = conn.execute(PAGE_SQL, (org_id, after, after, PAGE + 1)).fetchall()
        timings.append(time.perf_counter() - started)
        if len(rows) <= PAGE:
            return timings
        after = rows[PAGE - 1][0]


async def _run(args: argparse.Namespace, fleet: Fleet, db_name: str) -> dict[str, list[float]]:
    import psycopg

    conninfo = args.pg_admin_url.rsplit("/", 1)[0] + f"/{db_name}"
    db_url = conninfo.replace("postgresql://", "postgresql+psycopg://")
    port = _free_port()
    env = {
        **os.environ,
        "KEYVAULT_CP_DATABASE_URL": db_url,
        "KEYVAULT_CP_REDIS_URL": args.redis_url,
        "KEYVAULT_CP_REDIS_PREFIX": args.prefix,
        "KEYVAULT_CP_CA_KEY_PASSPHRASE": uuid.uuid4().hex,
        "KEYVAULT_CP_OWNER_PASSWORD": PASSWORD,
        "KEYVAULT_CP_LOG_LEVEL": "WARNING",
        "KEYVAULT_CP_PORT": str(port),
    }
    py = sys.executable
    for cmd in (["migrate"], ["init", "--org", "Bench", "--email", "bench@bench.test"]):
        subprocess.run([py, "-c", CLI, *cmd], env=env, check=True, capture_output=True, timeout=60)
    fleet.start([py, "-c", CLI, "run"], env)
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/api/v1/health")
    results: dict[str, list[float]] = {"vaults": [], "health": [], "db": []}
    connector = aiohttp.TCPConnector(limit=1)  # one keep-alive connection, like one operator UI
    async with aiohttp.ClientSession(connector=connector) as session:
        login = {"email": "bench@bench.test", "password": PASSWORD}
        async with session.post(f"{url}/api/v1/auth/login", json=login) as resp:
            token = (await resp.json())["token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{url}/api/v1/me", headers=headers) as resp:
            org_id = (await resp.json())["org"]["id"]
        await asyncio.to_thread(_insert_vaults, conninfo, org_id, args.vaults)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            await _api_pass(
                session, url, headers, args.vaults
            )  # warm-up: connections, plans, caches
            _db_pass(conn, org_id)
            for _ in range(args.passes):
                api = await _api_pass(session, url, headers, args.vaults)
                results["vaults"] += api
                results["health"] += await _health_pass(session, url, len(api))
                results["db"] += _db_pass(conn, org_id)
    return results


async def _cleanup_redis(redis_url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


def _row(label: str, values: list[float], target: str) -> str:
    def ms(q: float) -> str:
        return f"{_percentile(values, q) * 1000:.2f}"

    return f"| {label} | {len(values)} | {ms(0.5)} | {ms(0.95)} | {ms(0.99)} | {target} |"


async def _main(args: argparse.Namespace) -> int:
    fleet = Fleet()
    args.prefix = f"kvbench-{uuid.uuid4().hex[:8]}"
    load_before = os.getloadavg()
    try:
        with _database(args.pg_admin_url) as name:
            try:
                results = await _run(args, fleet, name)
            finally:
                fleet.stop()
    finally:
        await _cleanup_redis(args.redis_url, args.prefix)
    load_after = os.getloadavg()
    pages = args.vaults // PAGE
    print(
        f"GET /api/v1/vaults?limit={PAGE}: {args.vaults} vaults ({pages} pages), {args.passes} "
        f"passes, one keep-alive connection; load average {load_before[0]:.2f} -> "
        f"{load_after[0]:.2f} (1 min), {os.cpu_count()} cores\n"
    )
    print("| measured | requests | p50 ms | p95 ms | p99 ms | target |")
    print("|---|---|---|---|---|---|")
    print(_row("control plane GET /api/v1/vaults page", results["vaults"], "p99 <= 50 ms"))
    print(_row("HTTP floor: GET /api/v1/health", results["health"], "-"))
    print(_row("DB floor: page query, psycopg direct", results["db"], "-"))
    p99 = _percentile(results["vaults"], 0.99) * 1000
    ratio = p99 / (_percentile(results["health"], 0.99) * 1000)
    ok = p99 <= TARGET_P99_MS
    print(
        f"\np99 {p99:.1f} ms ({ratio:.1f}x the HTTP floor's p99): target {'met' if ok else 'NOT met'}"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vaults", type=int, default=10_000, help="vaults in the organisation")
    parser.add_argument("--passes", type=int, default=5, help="full pagination passes measured")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
