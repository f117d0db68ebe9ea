"""Benchmark of the operator stream's fan-out: ``python -m bench.stream``.

Starts two control-plane replicas (``control-plane run``) on a fresh PostgreSQL database and a
private Redis prefix, connects ``--clients`` WebSocket operators to replica A and ``--remote``
to replica B, then creates ``--events`` policies through A's API and measures, for every
client, the time from the request to the event's arrival. RSS growth per connection is read
from A's ``/proc/<pid>/status``. The same clients then connect to a bare aiohttp WebSocket
broadcast server (one process, no bus) for comparison. Everything binds 127.0.0.1 and every
process, database and Redis key it makes is removed at the end.

The clients run in ``--client-procs`` worker processes, each holding an equal share of the local
and the remote clients; arrival times use ``time.perf_counter`` (CLOCK_MONOTONIC, the same clock
in every process). The default is 1: on the 2-core machine this was written on, the replica that
fans out needs one core and the clients get the other; two client processes made three busy
processes on two cores and raised even the bare server's p95 (135-240 ms with one client process
against 235-253 ms with two, same day). Use ``--client-procs 2`` or more on a bigger machine.
Latencies still include the clients' own parsing time; the bare server's figures in the same run
show how much of it is the client's and the machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.harness import _die_with_parent
from common.events import POLICY_CREATED, encode, make

CLI = "from control_plane.cli import control_plane_group; control_plane_group()"
PASSWORD = "benchmark operator password"
POLICY = {
    "selector": {"name_glob": "bench/*"},
    "interval_seconds": 86400,
    "rotator": {"type": "random", "settings": {"length": 32}},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1):
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


@dataclass
class Fleet:
    """Child processes started by the benchmark, always stopped."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # gone even if the bench is killed with -9
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            if proc.poll() is None:
                proc.kill()


@contextlib.contextmanager
def _database(admin_url: str) -> Iterator[str]:
    import psycopg

    name = f"kv_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Listener:
    """Many WebSocket clients in one process; records when each event reaches each client."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[tuple[str, float]]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def connect(
        self, session: aiohttp.ClientSession, url: str, n: int, headers: dict[str, str], tag: str
    ) -> None:
        for start in range(0, n, 200):
            batch = [session.ws_connect(url, headers=headers) for _ in range(min(200, n - start))]
            for ws in await asyncio.gather(*batch):
                self.tasks.append(asyncio.create_task(self._read(ws, tag)))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, tag: str) -> None:
        async for msg in ws:
            doc = json.loads(msg.data)
            name = (doc.get("data") or {}).get("name")
            if name:
                self.arrivals.setdefault(name, []).append((tag, time.perf_counter()))

    async def wait_for(self, name: str, count: int, timeout: float = 30) -> list[tuple[str, float]]:
        deadline = time.monotonic() + timeout
        # polling only decides when to stop waiting; arrival times are taken as messages land
        while len(self.arrivals.get(name, [])) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return self.arrivals.pop(name, [])

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _worker_loop(conn: Any) -> None:
    listener = Listener()
    connected = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        while True:
            cmd = await asyncio.to_thread(conn.recv)
            if cmd[0] == "connect":
                _, url, n, headers, tag = cmd
                await listener.connect(session, url, n, headers, tag)
                connected += n
                conn.send(connected)
            elif cmd[0] == "wait":
                conn.send(await listener.wait_for(cmd[1], connected))
            else:
                await listener.close()
                conn.send("closed")
                return


def client_worker(conn: Any) -> None:
    """Entry point of a client worker process: obeys connect / wait / close over ``conn``."""
    asyncio.run(_worker_loop(conn))


class Clients:
    """Stream clients spread over worker processes, each with an equal share of every group."""

    def __init__(self, procs: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        for _ in range(procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_worker, args=(child,), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)

    async def _ask(self, conn: Any, cmd: tuple[Any, ...]) -> Any:
        conn.send(cmd)
        return await asyncio.to_thread(conn.recv)

    async def connect(self, url: str, n: int, headers: dict[str, str], tag: str) -> None:
        k = len(self._conns)
        shares = [n // k + (1 if i < n % k else 0) for i in range(k)]
        await asyncio.gather(
            *(
                self._ask(c, ("connect", url, m, headers, tag))
                for c, m in zip(self._conns, shares, strict=True)
            )
        )

    async def wait_for(self, name: str) -> list[tuple[str, float]]:
        parts = await asyncio.gather(*(self._ask(c, ("wait", name)) for c in self._conns))
        return [arrival for part in parts for arrival in part]

    async def close(self) -> None:
        await asyncio.gather(*(self._ask(c, ("close",)) for c in self._conns))
        for proc in self._procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()

    def kill(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


async def _measure(
    clients: Clients, publish: Any, events: int, expected: int
) -> tuple[dict[str, list[float]], int]:
    latencies: dict[str, list[float]] = {}
    missing = 0
    for i in range(events):
        name = f"bench-{uuid.uuid4().hex[:8]}-{i}"
        started = time.perf_counter()
        await publish(name)
        arrivals = await clients.wait_for(name)
        missing += expected - len(arrivals)
        for tag, t in arrivals:
            latencies.setdefault(tag, []).append(t - started)
        await asyncio.sleep(0.05)
    return latencies, missing


async def _run_control_plane(args: argparse.Namespace, fleet: Fleet, db_url: str) -> dict[str, Any]:
    prefix = f"kvbench-{uuid.uuid4().hex[:8]}"
    ports = [_free_port(), _free_port()]
    base = {
        **os.environ,
        "KEYVAULT_CP_DATABASE_URL": db_url,
        "KEYVAULT_CP_REDIS_URL": args.redis_url,
        "KEYVAULT_CP_REDIS_PREFIX": prefix,
        "KEYVAULT_CP_CA_KEY_PASSPHRASE": uuid.uuid4().hex,
        "KEYVAULT_CP_OWNER_PASSWORD": PASSWORD,
        "KEYVAULT_CP_LOG_LEVEL": "WARNING",
        "KEYVAULT_CP_GATEWAY_PORT": "0",
    }
    py = sys.executable
    await asyncio.to_thread(
        subprocess.run, [py, "-c", CLI, "migrate"], env=base, check=True, capture_output=True
    )
    await asyncio.to_thread(
        subprocess.run,
        [py, "-c", CLI, "init", "--org", "Bench", "--email", "bench@bench.test"],
        env=base,
        check=True,
        capture_output=True,
    )
    procs = [
        fleet.start([py, "-c", CLI, "run"], {**base, "KEYVAULT_CP_PORT": str(p)}) for p in ports
    ]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    for url in urls:
        _wait_http(f"{url}/api/v1/health")
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        login = {"email": "bench@bench.test", "password": PASSWORD}
        async with session.post(f"{urls[0]}/api/v1/auth/login", json=login) as resp:
            token = (await resp.json())["token"]
        headers = {"Authorization": f"Bearer {token}"}
        clients = Clients(args.client_procs)
        try:
            rss_before = _rss_kib(procs[0].pid)
            await clients.connect(f"{urls[0]}/api/v1/stream", args.clients, headers, "local")
            await asyncio.sleep(1)
            rss_connected = _rss_kib(procs[0].pid)
            await clients.connect(f"{urls[1]}/api/v1/stream", args.remote, headers, "remote")

            async def publish(name: str) -> None:
                body = {**POLICY, "name": name}
                url = f"{urls[0]}/api/v1/policies"
                async with session.post(url, json=body, headers=headers) as r:
                    assert r.status == 201, await r.text()

            latencies, missing = await _measure(
                clients, publish, args.events, args.clients + args.remote
            )
            rss_events = _rss_kib(procs[0].pid)
            await clients.close()
        finally:
            clients.kill()
    return {
        "latencies": latencies,
        "missing": missing,
        "rss_connect": (rss_connected - rss_before) / max(1, args.clients),
        "rss_events": (rss_events - rss_before) / max(1, args.clients),
    }


def _bare_app() -> web.Application:
    sockets: set[web.WebSocketResponse] = set()

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            sockets.discard(ws)
        return ws

    async def publish(request: web.Request) -> web.Response:
        body = await request.json()
        data = {"id": f"pol_{body['name']}", **body}
        text = encode(make(POLICY_CREATED, "org_bench", datetime.now(UTC), data))
        for ws in list(sockets):
            with contextlib.suppress(ConnectionError):
                await ws.send_str(text)
        return web.json_response({"sent": len(sockets)})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/stream", stream)
    app.router.add_post("/publish", publish)
    app.router.add_get("/health", health)
    return app


async def _run_bare(args: argparse.Namespace, fleet: Fleet) -> dict[str, Any]:
    port = _free_port()
    code = f"from bench.stream import bare_main; bare_main({port})"
    proc = fleet.start([sys.executable, "-c", code], dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/health")
    total = args.clients + args.remote
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        clients = Clients(args.client_procs)
        try:
            rss_before = _rss_kib(proc.pid)
            await clients.connect(f"{url}/stream", total, {}, "local")
            await asyncio.sleep(1)
            rss_connected = _rss_kib(proc.pid)

            async def publish(name: str) -> None:
                async with session.post(f"{url}/publish", json={"name": name}) as resp:
                    assert resp.status == 200

            latencies, missing = await _measure(clients, publish, args.events, total)
            rss_events = _rss_kib(proc.pid)
            await clients.close()
        finally:
            clients.kill()
    return {
        "latencies": latencies,
        "missing": missing,
        "rss_connect": (rss_connected - rss_before) / max(1, total),
        "rss_events": (rss_events - rss_before) / max(1, total),
    }


def bare_main(port: int) -> None:
    """Entry point of the bare broadcast server child process."""
    from common.eventloop import new_event_loop  # the control plane's loop (uvloop): like for like

    web.run_app(_bare_app(), host="127.0.0.1", port=port, print=None, loop=new_event_loop())


def _row(label: str, lat: list[float], missing: int | str, rss: str) -> str:
    def ms(q: float) -> str:
        return f"{_percentile(lat, q) * 1000:.1f}"

    top = max(lat, default=float("nan")) * 1000
    return (
        f"| {label} | {len(lat)} | {missing} | {ms(0.5)} | {ms(0.95)} | {ms(0.99)} | "
        f"{top:.1f} | {rss} |"
    )


def _rss(result: dict[str, Any]) -> str:
    return f"{result['rss_connect']:.1f} / {result['rss_events']:.1f}"


async def _main(args: argparse.Namespace) -> int:
    fleet = Fleet()
    load_before = os.getloadavg()
    try:
        with _database(args.pg_admin_url) as name:
            db_url = (
                args.pg_admin_url.rsplit("/", 1)[0].replace(
                    "postgresql://", "postgresql+psycopg://"
                )
                + f"/{name}"
            )
            cp = await _run_control_plane(args, fleet, db_url)
        bare = await _run_bare(args, fleet)
    finally:
        fleet.stop()
    load_after = os.getloadavg()
    local, remote = cp["latencies"].get("local", []), cp["latencies"].get("remote", [])
    every = local + remote
    bare_all = bare["latencies"].get("local", [])
    print(
        f"operator stream fan-out: {args.clients} clients on replica A + {args.remote} on "
        f"replica B (through Redis), {args.events} events, clients in {args.client_procs} "
        f"process(es); load average {load_before[0]:.2f} -> {load_after[0]:.2f} (1 min), "
        f"{os.cpu_count()} cores\n"
    )
    print(
        "| server | deliveries | missing | p50 ms | p95 ms | p99 ms | max ms "
        "| RSS KiB/conn (connected / after events) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(_row("control plane, all clients", every, cp["missing"], _rss(cp)))
    print(_row("  local (replica A)", local, "", ""))
    print(_row("  remote (replica B, via Redis)", remote, "", ""))
    print(_row("bare aiohttp broadcast (1 process)", bare_all, bare["missing"], _rss(bare)))
    p50 = _percentile(every, 0.5) / _percentile(bare_all, 0.5)
    p95 = _percentile(every, 0.95) / _percentile(bare_all, 0.95)
    print(f"\ncontrol plane / bare: p50 x{p50:.2f}, p95 x{p95:.2f}")
    ok = cp["missing"] == 0 and _percentile(every, 0.95) <= 0.2
    ok = ok and max(cp["rss_connect"], cp["rss_events"]) <= 40
    print(
        "targets (p95 <= 200 ms, RSS <= 40 KiB/conn connected and after events, nothing "
        f"missing): {'met' if ok else 'NOT met'}"
    )
    if args.json is not None:  # for ``python -m bench``'s table
        figures = {
            "clients": args.clients,
            "remote": args.remote,
            "events": args.events,
            "cp_p50_ms": _percentile(every, 0.5) * 1000,
            "cp_p95_ms": _percentile(every, 0.95) * 1000,
            "bare_p50_ms": _percentile(bare_all, 0.5) * 1000,
            "bare_p95_ms": _percentile(bare_all, 0.95) * 1000,
            "cp_missing": cp["missing"],
            "bare_missing": bare["missing"],
            "cp_rss_kib_per_conn": max(cp["rss_connect"], cp["rss_events"]),
            "load": [load_before[0], load_after[0]],
        }
        args.json.write_text(json.dumps(figures), encoding="utf-8")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=2000, help="stream clients on replica A")
    parser.add_argument("--remote", type=int, default=500, help="stream clients on replica B")
    parser.add_argument("--events", type=int, default=20, help="events to publish")
    parser.add_argument(
        "--client-procs", type=int, default=1, help="client worker processes (>= 1)"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", type=Path, help="also write the key figures to this file")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
