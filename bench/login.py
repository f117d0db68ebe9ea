"""Benchmark of operator logins under a password-spraying attack: ``python -m bench.login``.

Starts one control plane (``control-plane run``, embedded SQLite, the default argon2id cost
unless ``--argon2-memory-kib``/``--argon2-time-cost`` say otherwise) behind a declared TLS
proxy, so each request's source is the ``X-Forwarded-For`` the benchmark sets. Then two
phases of ``--seconds`` each:

* **quiet**: ``--users`` operators log in from their usual addresses, one after another;
* **attack**: the same logins while a sprayer keeps ``--concurrency`` requests in flight,
  guessing passwords of made-up and real accounts from ``--attackers`` addresses, half of
  them bogus invitation accepts.

Reported per phase: p50/p95/max of the legitimate logins, how many failed, the server's CPU
seconds (``/proc/<pid>/stat``), the password checks it ran (its ``/metrics``), and what the
attacker got back. Everything binds 127.0.0.1 and the data folder is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

CLI = [sys.executable, "-m", "apps.cli.main"]
PASSWORD = "benchmark operator password"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    cpu_seconds: float = 0.0
    checks: int = 0
    attacker: Counter[int] = field(default_factory=Counter)

    def row(self) -> str:
        """One Markdown table row."""
        ms = sorted(x * 1000 for x in self.latencies) or [0.0]
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        sent = sum(self.attacker.values())
        got = ", ".join(f"{k}: {v}" for k, v in sorted(self.attacker.items())) or "-"
        return (
            f"| {self.name} | {len(ms)} | {statistics.median(ms):.0f} | {p95:.0f} | "
            f"{max(ms):.0f} | {self.failures} | {self.cpu_seconds:.1f} | {self.checks} | "
            f"{sent} ({got}) |"
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def password_checks(session: aiohttp.ClientSession, url: str) -> int:
    """The replica's password-check counter."""
    async with session.get(f"{url}/api/v1/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith("keyvault_cp_password_checks "):
                return int(float(line.split()[1]))
    return 0


def start(folder: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    """Create the organisation and its users, start the replica; (process, API URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    env.update(
        KEYVAULT_CP_DATABASE_URL=f"sqlite+aiosqlite:///{folder / 'cp.db'}",
        KEYVAULT_CP_CA_KEY_PASSPHRASE="benchmark ca passphrase",
        KEYVAULT_CP_TLS_PROXY="true",
        KEYVAULT_CP_BACKGROUND_TASKS="false",
        KEYVAULT_CP_ARGON2_TIME_COST=str(args.argon2_time_cost),
        KEYVAULT_CP_ARGON2_MEMORY_KIB=str(args.argon2_memory_kib),
        KEYVAULT_CP_PORT="0",
        KEYVAULT_CP_GATEWAY_PORT="0",
        KEYVAULT_CP_LOG_LEVEL="WARNING",
    )
    init = [*CLI, "control-plane", "init", "--org", "Bench", "--email", "user0@bench.test"]
    subprocess.run(
        init, env={**env, "KEYVAULT_CP_OWNER_PASSWORD": PASSWORD}, check=True, capture_output=True
    )
    ready = folder / "ready.json"
    log = (folder / "cp.log").open("wb")
    proc = subprocess.Popen(
        [*CLI, "control-plane", "run", "--ready-file", str(ready)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not (ready.exists() and ready.stat().st_size):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the control plane did not start; see {folder / 'cp.log'}")
        time.sleep(0.05)
    return proc, str(json.loads(ready.read_text())["api_url"])


async def add_users(url: str, count: int) -> list[str]:
    """``count`` operators (the owner and invited viewers); their e-mail addresses."""
    emails = ["user0@bench.test"]
    async with aiohttp.ClientSession() as http:
        body = {"email": emails[0], "password": PASSWORD}
        async with http.post(f"{url}/api/v1/auth/login", json=body) as resp:
            owner = (await resp.json())["token"]
        auth = {"Authorization": f"Bearer {owner}"}
        for i in range(1, count):
            email = f"user{i}@bench.test"
            doc = {"email": email, "role": "viewer"}
            async with http.post(f"{url}/api/v1/invitations", json=doc, headers=auth) as resp:
                token = (await resp.json())["token"]
            doc = {"token": token, "password": PASSWORD}
            async with http.post(f"{url}/api/v1/invitations/accept", json=doc) as resp:
                assert resp.status == 201, await resp.text()
            emails.append(email)
    return emails


async def legit(url: str, emails: list[str], seconds: float, phase: Phase) -> None:
    """Each user logs in from their own usual address, round-robin, for ``seconds``."""
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        i = 0
        while time.monotonic() < end:
            email = emails[i % len(emails)]
            headers = {"X-Forwarded-For": f"192.0.2.{1 + i % len(emails)}"}
            started = time.perf_counter()
            body = {"email": email, "password": PASSWORD}
            async with http.post(f"{url}/api/v1/auth/login", json=body, headers=headers) as r:
                await r.read()
                ok = r.status == 200
            phase.latencies.append(time.perf_counter() - started)
            phase.failures += 0 if ok else 1
            i += 1
            await asyncio.sleep(0.2)


async def spray(url: str, args: argparse.Namespace, stop: asyncio.Event, phase: Phase) -> None:
    """Keep ``--concurrency`` bogus logins and accepts in flight until ``stop``."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def worker(w: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                source = {"X-Forwarded-For": f"198.51.100.{w % args.attackers}"}
                if n % 2:
                    path = "auth/login"
                    body = {"email": f"user{n % 50}@bench.test", "password": f"guess {n}!"}
                else:
                    path = "invitations/accept"
                    body = {"token": f"kvi_guess{w}x{n}", "password": "a long password"}
                try:
                    async with http.post(f"{url}/api/v1/{path}", json=body, headers=source) as r:
                        await r.read()
                        phase.attacker[r.status] += 1
                except aiohttp.ClientError:
                    phase.attacker[0] += 1

        await asyncio.gather(*(worker(w) for w in range(args.concurrency)))


async def run_phase(
    name: str, url: str, pid: int, emails: list[str], args: argparse.Namespace, attack: bool
) -> Phase:
    """One phase: legitimate logins, with or without the sprayer."""
    phase = Phase(name)
    async with aiohttp.ClientSession() as http:
        checks, cpu = await password_checks(http, url), cpu_seconds(pid)
        stop = asyncio.Event()
        sprayer = asyncio.ensure_future(spray(url, args, stop, phase)) if attack else None
        await legit(url, emails, args.seconds, phase)
        stop.set()
        if sprayer is not None:
            await sprayer
        phase.cpu_seconds = cpu_seconds(pid) - cpu
        phase.checks = await password_checks(http, url) - checks
    return phase


async def bench(url: str, pid: int, args: argparse.Namespace) -> list[Phase]:
    """Both phases, after one warm-up login per user (their addresses become known)."""
    emails = await add_users(url, args.users)
    await run_phase(
        "warm-up",
        url,
        pid,
        emails,
        argparse.Namespace(**{**vars(args), "seconds": 0.2 * args.users}),
        False,
    )
    quiet = await run_phase("quiet", url, pid, emails, args, attack=False)
    attacked = await run_phase("under attack", url, pid, emails, args, attack=True)
    return [quiet, attacked]


def main() -> None:
    """Parse options, run, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.login", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--users", type=int, default=5, help="legitimate operators")
    parser.add_argument("--concurrency", type=int, default=64, help="attacker requests in flight")
    parser.add_argument("--attackers", type=int, default=8, help="attacker addresses")
    parser.add_argument("--argon2-time-cost", type=int, default=3)
    parser.add_argument("--argon2-memory-kib", type=int, default=65536)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="kv-bench-login-"))
    proc, url = start(folder, args)
    try:
        phases = asyncio.run(bench(url, proc.pid, args))
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"argon2id t={args.argon2_time_cost} m={args.argon2_memory_kib} KiB; "
        f"{args.users} operators; attacker: {args.concurrency} in flight from "
        f"{args.attackers} addresses; {args.seconds:g} s per phase"
    )
    print(
        "| phase | logins | p50 ms | p95 ms | max ms | failed | server CPU s | "
        "password checks | attacker requests (status: count) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for phase in phases:
        print(phase.row())


if __name__ == "__main__":
    main()
