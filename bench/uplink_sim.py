"""Simulated vault agents for the uplink benchmark: real mutual TLS, the real protocol (v1).

One worker process holds many agents. Each agent connects to the gateway's WebSocket with its own
client certificate (leaf + organisation CA chain, from real enrollments), says ``hello``, waits for
``welcome``, then sends a ``heartbeat`` every ``interval`` seconds at a random phase, and answers
commands with nothing (the benchmark sends none). The worker obeys the driver over a pipe:
``connect`` (returns how many connected and the failures), ``stats``, ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from common.tls import client_context
from common.uplink import PROTOCOL, UPLINK_PATH, encode


@dataclass
class Identity:
    """One enrolled vault: its id and the files of its client certificate chain and key."""

    vault_id: str
    cert_file: str
    key_file: str


def _health(started: float, seq: int) -> dict[str, Any]:
    return {
        "status": "healthy",
        "version": "0.1.0",
        "uptime_seconds": round(time.monotonic() - started, 1),
        "counts": {"secrets": 12, "versions": 30, "tokens": 3},
        "storage_bytes": 1_048_576,
        "outbox_depth": 0,
        "certificate_not_after": None,
        "audit_head": {"seq": seq, "mac": "0" * 64},
        "integrity_failures": 0,
        "audit_failures": 0,
    }


class Agent:
    """One simulated agent's connection and heartbeat loop."""

    def __init__(self, ident: Identity, ca_file: str, url: str, interval: float) -> None:
        self.ident = ident
        self.url = url
        self.interval = interval
        self.ctx: ssl.SSLContext = client_context(
            ca_file, cert_file=ident.cert_file, key_file=ident.key_file
        )
        self.sent = 0
        self.task: asyncio.Task[None] | None = None

    async def connect(self, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        ws = await session.ws_connect(self.url + UPLINK_PATH, ssl=self.ctx, heartbeat=None)
        hello = {
            "type": "hello",
            "protocol": PROTOCOL,
            "vault_id": self.ident.vault_id,
            "agent_version": "0.1.0",
            "metadata_key_fingerprint": None,
        }
        await ws.send_str(encode(hello))
        while True:
            msg = await asyncio.wait_for(ws.receive(), 30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"closed before welcome: {msg.type} {msg.data} {msg.extra}")
            if json.loads(msg.data).get("type") == "welcome":
                return ws

    async def run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        started = time.monotonic()
        reader = asyncio.create_task(self._drain(ws))
        try:
            await asyncio.sleep(random.uniform(0, self.interval))
            while not ws.closed:
                self.sent += 1
                await ws.send_str(
                    encode({"type": "heartbeat", "health": _health(started, self.sent)})
                )
                await asyncio.sleep(self.interval)
        finally:
            reader.cancel()

    async def _drain(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _ in ws:
            pass


async def _connect_all(
    session: aiohttp.ClientSession,
    idents: list[Identity],
    ca_file: str,
    url: str,
    interval: float,
    concurrency: int,
    agents: list[Agent],
    failures: list[str],
) -> None:
    """Connect every identity (``concurrency`` handshakes at a time) and start its heartbeats."""
    gate = asyncio.Semaphore(concurrency)

    async def one(ident: Identity) -> None:
        agent = Agent(ident, ca_file, url, interval)
        async with gate:
            try:
                ws = await agent.connect(session)
            except Exception as exc:  # reported to the driver, counted as failed
                failures.append(f"{type(exc).__name__}: {exc}"[:200])
                return
        agent.task = asyncio.create_task(agent.run(ws))
        agents.append(agent)

    await asyncio.gather(*(one(i) for i in idents))


async def _worker(conn: Any) -> None:
    agents: list[Agent] = []
    failures: list[str] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        while True:
            cmd = await asyncio.to_thread(conn.recv)
            if cmd[0] == "connect":
                _, idents, ca_file, url, interval, concurrency = cmd
                await _connect_all(
                    session, idents, ca_file, url, interval, concurrency, agents, failures
                )
                conn.send((len(agents), failures[:5], len(failures)))
            elif cmd[0] == "stats":
                alive = sum(1 for a in agents if a.task is not None and not a.task.done())
                conn.send((alive, sum(a.sent for a in agents)))
            else:
                for agent in agents:
                    if agent.task is not None:
                        agent.task.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.gather(
                        *(a.task for a in agents if a.task is not None), return_exceptions=True
                    )
                conn.send("closed")
                return


def worker(conn: Any) -> None:
    """Entry point of a simulator process (multiprocessing ``spawn``)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_worker(conn))


def load_identities(folder: Path) -> list[Identity]:
    """Identities saved by the driver as ``<vault_id>.crt`` / ``<vault_id>.key`` pairs."""
    return [
        Identity(p.stem, str(p), str(p.with_suffix(".key"))) for p in sorted(folder.glob("*.crt"))
    ]
