"""Benchmark of the agent uplink: ``python -m bench.uplink [--agents 2000] [--quick]``.

What it does, all on 127.0.0.1 with real processes:

1. A fresh PostgreSQL database and a private Redis prefix; ``control-plane migrate`` and
   ``init``; one control-plane replica (``control-plane run``), with a heartbeat interval of
   ``--interval`` seconds and a vault-offline timeout of ``--offline-after`` seconds.
2. ``--agents`` real enrollments through the gateway (enrollment token → CSR → certificate).
3. Simulator processes (:mod:`bench.uplink_sim`) open one mutual-TLS WebSocket per agent, say
   hello, and heartbeat every ``--interval`` s for ``--duration`` s. The replica's RSS is read
   before and after the connections, its CPU over the steady window, and its heartbeat handling
   time from its own ``/api/v1/metrics`` histogram.
4. Time from an agent's death (SIGKILL of a simulator process holding a few agents) to the
   ``vault offline`` alert on an operator stream.
5. Baseline in the same run: the same simulator against a bare aiohttp WebSocket server with the
   same TLS (mutual, TLS 1.3, P-256, the same client chains), which only parses each frame.

Every process, database and Redis key it makes is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.stream import PASSWORD, Fleet, _database, _rss_kib, _wait_http
from bench.uplink_sim import Identity, load_identities, worker
from common.events import ALERT_RAISED
from common.pki import CertificateAuthority, make_csr, spki_pin
from common.tls import client_context, write_pem
from common.uplink import BOOTSTRAP_PATH, REGISTER_PATH

CLI = "from control_plane.cli import control_plane_group; control_plane_group()"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def _histogram(text: str, metric: str) -> list[tuple[float, int]]:
    """Cumulative ``(upper bound, count)`` buckets of a Prometheus histogram, sorted."""
    buckets: list[tuple[float, int]] = []
    for line in text.splitlines():
        if line.startswith(metric + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets.append((bound, int(float(line.split()[-1]))))
    if not buckets:
        raise RuntimeError(f"{metric} is not in the control plane's metrics")
    return sorted(buckets)


def _window_quantile(
    before: list[tuple[float, int]], after: list[tuple[float, int]], q: float
) -> tuple[float, int]:
    """(bucket bound holding quantile ``q``, count) of the observations between two snapshots."""
    counts = dict(before)
    window = [(bound, n - counts.get(bound, 0)) for bound, n in after]
    total = window[-1][1]
    for bound, n in window:
        if total and n >= q * total:
            return bound, total
    return float("inf"), total


class Sims:
    """Simulator worker processes."""

    def __init__(self, procs: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        for _ in range(procs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(child,), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    async def ask(self, i: int, cmd: tuple[Any, ...]) -> Any:
        self.conns[i].send(cmd)
        return await asyncio.to_thread(self.conns[i].recv)

    async def connect(
        self, idents: list[Identity], ca_file: str, url: str, interval: float
    ) -> tuple[int, list[str], int]:
        k = len(self.conns)
        parts = [idents[i::k] for i in range(k)]
        results = await asyncio.gather(
            *(
                self.ask(i, ("connect", part, ca_file, url, interval, 64))
                for i, part in enumerate(parts)
            )
        )
        return (
            sum(r[0] for r in results),
            [m for r in results for m in r[1]][:5],
            sum(r[2] for r in results),
        )

    async def stats(self) -> tuple[int, int]:
        results = await asyncio.gather(*(self.ask(i, ("stats",)) for i in range(len(self.conns))))
        return sum(r[0] for r in results), sum(r[1] for r in results)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*(self.ask(i, ("close",)) for i in range(len(self.conns)))), 30
            )
        self.kill()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.kill()
            proc.join(5)


# --------------------------------------------------------------------------- control plane


async def _start_control_plane(
    args: argparse.Namespace, fleet: Fleet, db_url: str, work: Path
) -> tuple[subprocess.Popen[bytes], dict[str, str], dict[str, str]]:
    env = {
        **os.environ,
        "KEYVAULT_CP_DATABASE_URL": db_url,
        "KEYVAULT_CP_REDIS_URL": args.redis_url,
        "KEYVAULT_CP_REDIS_PREFIX": f"kvbench-{uuid.uuid4().hex[:8]}",
        "KEYVAULT_CP_CA_KEY_PASSPHRASE": uuid.uuid4().hex,
        "KEYVAULT_CP_OWNER_PASSWORD": PASSWORD,
        "KEYVAULT_CP_LOG_LEVEL": "WARNING",
        "KEYVAULT_CP_OFFLINE_AFTER_SECONDS": str(args.offline_after),
        "KEYVAULT_CP_UPLINK_HEARTBEAT_SECONDS": str(int(args.interval)),
        "KEYVAULT_CP_SWEEP_INTERVAL_SECONDS": "5",
        "KEYVAULT_CP_PORT": "0",
        "KEYVAULT_CP_GATEWAY_PORT": "0",
    }
    py = sys.executable
    for cmd in (["migrate"], ["init", "--org", "Bench", "--email", "bench@bench.test"]):
        await asyncio.to_thread(
            subprocess.run, [py, "-c", CLI, *cmd], env=env, check=True, capture_output=True
        )
    ready = work / "cp-ready.json"
    proc = fleet.start([py, "-c", CLI, "run", "--ready-file", str(ready)], env)
    deadline = time.monotonic() + 60
    while not (ready.exists() and ready.stat().st_size):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the control plane did not start")
        await asyncio.sleep(0.1)
    urls = json.loads(ready.read_text())
    _wait_http(urls["api_url"] + "/api/v1/health")
    return proc, urls, env


async def _login(api: str) -> str:
    async with aiohttp.ClientSession() as s:
        r = await s.post(
            api + "/api/v1/auth/login", json={"email": "bench@bench.test", "password": PASSWORD}
        )
        r.raise_for_status()
        return str((await r.json())["token"])


async def _enroll(api: str, gateway: str, session_token: str, n: int, folder: Path) -> Path:
    """``n`` real enrollments; returns the service-CA file the agents trust."""
    folder.mkdir(parents=True, exist_ok=True)
    auth = {"Authorization": f"Bearer {session_token}"}
    insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as s:
        boot = await (await s.get(gateway + BOOTSTRAP_PATH, ssl=insecure)).json()
        ca_file = write_pem(folder / "service-ca.pem", boot["ca_certificate"].encode())
        trusted = client_context(ca_file)
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with gate:
                r = await s.post(
                    api + "/api/v1/enrollment-tokens",
                    json={"description": f"bench {i}"},
                    headers=auth,
                )
                r.raise_for_status()
                token = (await r.json())["token"]
                assert token.split(".")[1] == spki_pin(boot["ca_certificate"]).removeprefix(
                    "sha256:"
                )
                csr, key = make_csr(f"bench-{i}")
                body = {
                    "token": token,
                    "csr": csr.decode(),
                    "name": f"bench-{i}",
                    "agent_version": "0.1.0",
                }
                r = await s.post(gateway + REGISTER_PATH, json=body, ssl=trusted)
                if r.status >= 300:
                    raise RuntimeError(f"register failed: {r.status} {await r.text()}")
                doc = await r.json()
                vid = doc["vault_id"]
                write_pem(
                    folder / f"{vid}.crt", (doc["certificate"] + doc["ca_certificate"]).encode()
                )
                write_pem(folder / f"{vid}.key", key, private=True)

        done = 0
        for start in range(0, n, 100):
            await asyncio.gather(*(one(i) for i in range(start, min(n, start + 100))))
            done = min(n, start + 100)
            print(f"\r  enrolled {done}/{n}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    return ca_file


async def _offline_latency(
    api: str,
    session_token: str,
    idents: list[Identity],
    ca_file: str,
    gateway: str,
    interval: float,
) -> list[float]:
    """Seconds from SIGKILL of a process holding ``idents`` to each vault-offline alert."""
    sims = Sims(1)
    arrivals: dict[str, float] = {}
    try:
        connected, errors, _ = await sims.connect(idents, ca_file, gateway, interval)
        if connected != len(idents):
            raise RuntimeError(f"offline probe: only {connected} connected: {errors}")
        wanted = {i.vault_id for i in idents}
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(
                api + "/api/v1/stream", headers={"Authorization": f"Bearer {session_token}"}
            )
            await asyncio.sleep(interval + 1)  # every probe agent has sent a heartbeat
            killed = time.monotonic()
            os.kill(sims.procs[0].pid, signal.SIGKILL)
            deadline = killed + 300
            while wanted - arrivals.keys() and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    msg = await ws.receive(timeout=1)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    doc = json.loads(msg.data)
                    data = doc.get("data") or {}
                    if doc.get("type") == ALERT_RAISED.name and data.get("kind") == "vault_offline":
                        if data.get("vault_id") in wanted:
                            arrivals.setdefault(data["vault_id"], time.monotonic() - killed)
            await ws.close()
    finally:
        sims.kill()
    return sorted(arrivals.values())


# --------------------------------------------------------------------------- bare baseline


def _bare_server_main(port_file: str, cert: str, key: str, client_ca: str) -> None:
    """A bare aiohttp WebSocket server with the gateway's TLS settings; parses frames only."""
    from aiohttp import web

    from common.eventloop import new_event_loop
    from common.tls import server_context

    timings: list[float] = []

    async def uplink(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        async for msg in ws:
            t0 = time.perf_counter()
            doc = json.loads(msg.data)
            if doc.get("type") == "hello":
                await ws.send_str(json.dumps({"type": "welcome", "protocol": 1}))
            timings.append(time.perf_counter() - t0)
        return ws

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"p99": _percentile(timings, 0.99), "n": len(timings)})

    app = web.Application()
    app.router.add_get("/api/v1/agent/uplink", uplink)
    app.router.add_get("/stats", stats)
    ctx = server_context(cert, key, client_ca_file=client_ca, require_client_cert=False)
    loop = new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx, backlog=4096)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    Path(port_file).write_text(str(port))
    loop.run_forever()


def _start_bare(
    fleet: Fleet, work: Path, client_ca: Path
) -> tuple[subprocess.Popen[bytes], str, Path]:
    ca = CertificateAuthority.create("bench bare server CA")
    cert, key = ca.issue_server_cert(["localhost"])
    write_pem(work / "bare.crt", cert)
    write_pem(work / "bare.key", key, private=True)
    ca_file = write_pem(work / "bare-ca.pem", ca.cert_pem())
    port_file = work / "bare.port"
    code = (
        "import sys; from bench.uplink import _bare_server_main; _bare_server_main(*sys.argv[1:])"
    )
    proc = fleet.start(
        [
            sys.executable,
            "-c",
            code,
            str(port_file),
            str(work / "bare.crt"),
            str(work / "bare.key"),
            str(client_ca),
        ],
        dict(os.environ),
    )
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("bare server did not start")
        time.sleep(0.05)
    return proc, f"https://127.0.0.1:{port_file.read_text()}", ca_file


# --------------------------------------------------------------------------- measuring


async def _hold(
    pid: int,
    sims: Sims,
    idents: list[Identity],
    ca_file: str,
    url: str,
    args: argparse.Namespace,
    snapshot: Any = None,
) -> dict[str, Any]:
    """Connect every identity, hold for ``duration``; RSS and CPU of ``pid``."""
    await asyncio.sleep(1)
    rss_before = _rss_kib(pid)
    connected, connect_s, connect_cpu_ms = await _connect(pid, sims, idents, ca_file, url, args)
    await asyncio.sleep(args.interval)  # first heartbeats land, allocations settle
    first = await snapshot() if snapshot else None
    cpu0, wall0 = _cpu_seconds(pid), time.monotonic()
    _, sent0 = await sims.stats()
    await asyncio.sleep(args.duration)
    cpu1, wall1 = _cpu_seconds(pid), time.monotonic()
    alive, sent1 = await sims.stats()
    last = await snapshot() if snapshot else None
    rss_after = _rss_kib(pid)
    return {
        "snapshots": (first, last),
        "connected": connected,
        "alive": alive,
        "connect_s": connect_s,
        "connect_cpu_ms": connect_cpu_ms,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_per_conn_kib": (rss_after - rss_before) / max(connected, 1),
        "cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0),
        "heartbeats_per_s": (sent1 - sent0) / (wall1 - wall0),
    }


async def _connect_round(
    pid: int, idents: list[Identity], ca_file: str | Path, url: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One extra connect round (``--rounds``): connect every identity, then close them all."""
    sims = Sims(args.procs)
    try:
        await asyncio.sleep(1)
        _, connect_s, connect_cpu_ms = await _connect(pid, sims, idents, str(ca_file), url, args)
        return {"connect_s": connect_s, "connect_cpu_ms": connect_cpu_ms}
    finally:
        await sims.close()


async def _connect(
    pid: int, sims: Sims, idents: list[Identity], ca_file: str, url: str, args: argparse.Namespace
) -> tuple[int, float, float]:
    """Connect every identity: (connected, seconds, the server's ms of CPU per connection)."""
    t0, cpu_start = time.monotonic(), _cpu_seconds(pid)
    connected, errors, failed = await sims.connect(idents, ca_file, url, args.interval)
    connect_s = time.monotonic() - t0
    # the server's own CPU per connection: steadier than wall time on a shared machine
    connect_cpu_ms = 1000 * (_cpu_seconds(pid) - cpu_start) / max(connected, 1)
    if failed:
        print(f"  {failed} connections failed, e.g. {errors}", file=sys.stderr)
    return connected, connect_s, connect_cpu_ms


def _table(
    cp: dict[str, Any], bare: dict[str, Any], offline: list[float], args: argparse.Namespace
) -> str:
    lines = [
        f"Uplink: {args.agents} agents, heartbeat every {args.interval:g} s, "
        f"steady window {args.duration:g} s, offline timeout {args.offline_after} s",
        "",
        "| measure | control plane | bare aiohttp WS (same TLS) | ratio | target |",
        "|---|---|---|---|---|",
        f"| connections held | {cp['alive']}/{args.agents} | {bare['alive']}/{args.agents} | | {args.agents} |",
        f"| time to connect all (median of {len(cp['rounds_s'])} interleaved rounds) | {cp['connect_s']:.1f} s | {bare['connect_s']:.1f} s | {cp['connect_s'] / bare['connect_s']:.2f} | |",
        f"| each round's time | {', '.join(f'{x:.1f}' for x in cp['rounds_s'])} s | {', '.join(f'{x:.1f}' for x in bare['rounds_s'])} s | | |",
        f"| server CPU per connection (connect phase) | {cp['connect_cpu_ms']:.2f} ms | {bare['connect_cpu_ms']:.2f} ms | {cp['connect_cpu_ms'] / max(bare['connect_cpu_ms'], 0.001):.2f} | |",
        f"| heartbeats handled /s | {cp['heartbeats_per_s']:.0f} | {bare['heartbeats_per_s']:.0f} | | {args.agents / args.interval:.0f} |",
        f"| CPU of the server process | {cp['cpu_pct']:.1f} % | {bare['cpu_pct']:.1f} % | {cp['cpu_pct'] / max(bare['cpu_pct'], 0.01):.1f} | |",
        f"| RSS before → after | {cp['rss_before_kib'] / 1024:.0f} → {cp['rss_after_kib'] / 1024:.0f} MiB | {bare['rss_before_kib'] / 1024:.0f} → {bare['rss_after_kib'] / 1024:.0f} MiB | | |",
        f"| RSS growth per connection | {cp['rss_per_conn_kib']:.1f} KiB | {bare['rss_per_conn_kib']:.1f} KiB | {cp['rss_per_conn_kib'] / max(bare['rss_per_conn_kib'], 0.01):.2f} | ≤ 58.6 KiB (60 KB) |",
        f"| heartbeat handling (steady window) | p50 ≤ {cp['hb_p50_ms']:g} ms, p99 ≤ {cp['hb_p99_ms']:g} ms (histogram bucket bounds, n={cp['hb_n']}) | {bare['hb_p99_ms']:.3f} ms (parse only) | | ≤ 50 ms |",
        f"| agent death → offline alert on stream | median {_percentile(offline, 0.5):.1f} s, max {max(offline, default=float('nan')):.1f} s (n={len(offline)}) | | | ≤ {args.offline_after + 2} s |",
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> str:
    fleet = Fleet()
    with tempfile.TemporaryDirectory(prefix="kvbench-uplink-") as tmp, _database(PG_ADMIN) as db:
        work = Path(tmp)
        try:
            db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
            cp_proc, urls, _env = await _start_control_plane(args, fleet, db_url, work)
            api, gateway = urls["api_url"], urls["gateway_url"]
            token = await _login(api)
            probe_n = 5
            ca_file = await _enroll(api, gateway, token, args.agents + probe_n, work / "ids")
            idents = load_identities(work / "ids")
            probe, idents = idents[:probe_n], idents[probe_n:]

            print("  control plane: connecting", file=sys.stderr)
            bare_rounds: list[dict[str, Any]] = []
            cp_rounds: list[dict[str, Any]] = []
            bare_proc, bare_url, bare_ca = _start_bare(fleet, work, Path(ca_file))
            for extra in range(1, args.rounds):  # interleaved, bare first: the same minutes
                print(f"  round {extra}/{args.rounds}: bare, then control plane", file=sys.stderr)
                bare_rounds.append(
                    await _connect_round(bare_proc.pid, idents, bare_ca, bare_url, args)
                )
                cp_rounds.append(await _connect_round(cp_proc.pid, idents, ca_file, gateway, args))
            sims = Sims(args.procs)
            try:

                async def snapshot() -> list[tuple[float, int]]:
                    text = (await asyncio.to_thread(_get, api + "/api/v1/metrics")).decode()
                    return _histogram(text, args.hb_metric)

                cp = await _hold(cp_proc.pid, sims, idents, str(ca_file), gateway, args, snapshot)
                before = dict(cp["snapshots"][0])
                window = [(b, c - before.get(b, 0)) for b, c in cp["snapshots"][1]]
                print(
                    f"  heartbeat histogram in the window (le, cumulative): {window}",
                    file=sys.stderr,
                )
                p99, n = _window_quantile(cp["snapshots"][0], cp["snapshots"][1], 0.99)
                p50, _ = _window_quantile(cp["snapshots"][0], cp["snapshots"][1], 0.50)
                cp["hb_p99_ms"], cp["hb_p50_ms"], cp["hb_n"] = p99 * 1000, p50 * 1000, n
                offline: list[float] = []
                if not args.connect_only:
                    print("  control plane: agent death → alert", file=sys.stderr)
                    offline = await _offline_latency(
                        api, token, probe, str(ca_file), gateway, args.interval
                    )
            finally:
                await sims.close()

            print("  bare server: connecting", file=sys.stderr)
            sims = Sims(args.procs)
            try:
                bare = await _hold(bare_proc.pid, sims, idents, str(bare_ca), bare_url, args)
                stats = json.loads(await asyncio.to_thread(_get, bare_url + "/stats"))
                bare["hb_p99_ms"] = stats["p99"] * 1000
            finally:
                await sims.close()
            cp_rounds.append(cp)
            bare_rounds.append(bare)
            cp["rounds_s"] = [r["connect_s"] for r in cp_rounds]
            bare["rounds_s"] = [r["connect_s"] for r in bare_rounds]
            for side, rounds in ((cp, cp_rounds), (bare, bare_rounds)):
                side["last_connect_s"] = side["connect_s"]
                side["connect_s"] = statistics.median(r["connect_s"] for r in rounds)
                side["connect_cpu_ms"] = statistics.median(r["connect_cpu_ms"] for r in rounds)
            if args.json is not None:  # for ``python -m bench``'s table
                keep = (
                    "connected",
                    "alive",
                    "connect_s",
                    "connect_cpu_ms",
                    "rss_per_conn_kib",
                    "cpu_pct",
                    "rounds_s",
                )
                figures = {
                    "agents": args.agents,
                    "cp": {k: cp[k] for k in keep},
                    "bare": {k: bare[k] for k in keep},
                    "hb_p99_ms": cp["hb_p99_ms"],
                }
                args.json.write_text(json.dumps(figures), encoding="utf-8")
            return _table(cp, bare, offline, args)
        finally:
            fleet.stop()


def _get(url: str) -> bytes:
    """GET a benchmark-local URL (a bare server's certificate is not verified)."""
    import urllib.request

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, context=ctx, timeout=30) as response:
        return bytes(response.read())


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run, print the table (and append it to ``--out``)."""
    p = argparse.ArgumentParser(prog="python -m bench.uplink", description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=2000)
    p.add_argument("--interval", type=float, default=10.0, help="heartbeat interval, seconds")
    p.add_argument("--duration", type=float, default=60.0, help="steady window, seconds")
    p.add_argument("--offline-after", type=int, default=20, help="vault-offline timeout, seconds")
    p.add_argument("--procs", type=int, default=1, help="simulator processes")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--hb-metric", default="keyvault_cp_uplink_heartbeat_seconds")
    p.add_argument("--quick", action="store_true", help="200 agents, 20 s window")
    p.add_argument("--out", type=Path, help="append the table to this file")
    p.add_argument(
        "--connect-only",
        action="store_true",
        help="skip the agent-death → alert probe (for python -m bench: connect time and RSS)",
    )
    p.add_argument("--json", type=Path, help="also write the key figures to this file")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="connect rounds per server, interleaved bare/control plane; the table shows medians",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.agents, args.duration = 200, 20.0
    if args.rounds < 1:
        p.error("--rounds must be 1 or more")
    if args.rounds > 1 and args.connect_only:  # no offline alerts between rounds (both sides
        args.offline_after = 3600  # idle between them; the death probe needs the short one)
    table = asyncio.run(main_async(args))
    print(table)
    if args.out:
        with args.out.open("a", encoding="utf-8") as f:
            f.write(table + "\n\n")


if __name__ == "__main__":
    main()
