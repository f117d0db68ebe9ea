"""A small test-side agent for the gateway: enrollment over real TLS and a WebSocket uplink.

It follows ``docs/uplink.md`` from the agent's side (bootstrap without verification and a pin
check, a P-256 CSR, then mutual TLS with ``leaf + org CA`` as the client chain) so the tests
exercise the control plane exactly as a real agent would reach it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from common import uplink
from common.pki import make_csr, spki_pin
from common.tls import client_context, write_pem
from tests.control_plane.conftest import Api


def insecure_context() -> ssl.SSLContext:
    """TLS 1.3 without verification: only for the bootstrap request (nothing secret sent)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def ws_url(gateway_url: str) -> str:
    """The uplink's wss:// URL."""
    return gateway_url.replace("https://", "wss://") + uplink.UPLINK_PATH


@dataclass
class Enrolled:
    """An enrolled mock agent's identity, written to a folder like the real agent's."""

    vault_id: str
    gateway_url: str
    folder: Path
    service_ca_pem: str
    name: str = "vault-1"

    @property
    def chain(self) -> Path:
        """leaf + org CA."""
        return self.folder / "client.crt"

    @property
    def key(self) -> Path:
        """The private key (never leaves)."""
        return self.folder / "client.key"

    def ssl(self, *, cert: bool = True) -> ssl.SSLContext:
        """Mutual TLS trusting only the service CA (hostname checked)."""
        return client_context(
            ca_pem=self.service_ca_pem,
            cert_file=self.chain if cert else None,
            key_file=self.key if cert else None,
        )

    async def connect(self, *, cert: bool = True, autoping: bool = True) -> Uplink:
        """Open the uplink WebSocket (no hello sent yet); ``autoping=False`` plays dead."""
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                ws_url(self.gateway_url), ssl=self.ssl(cert=cert), autoping=autoping
            )
        except BaseException:
            await session.close()
            raise
        return Uplink(self, session, ws)

    async def online(self, fingerprint: str | None = None, **kw: Any) -> Uplink:
        """Connect and complete hello → welcome + policies."""
        link = await self.connect(**kw)
        await link.hello(fingerprint)
        return link


@dataclass
class Uplink:
    """One open uplink of a mock agent."""

    agent: Enrolled
    session: aiohttp.ClientSession
    ws: aiohttp.ClientWebSocketResponse
    welcome: dict[str, Any] = field(default_factory=dict)
    policies: list[dict[str, Any]] = field(default_factory=list)

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one frame."""
        await self.ws.send_str(json.dumps(frame))

    async def hello(self, fingerprint: str | None = None, **extra: Any) -> None:
        """Send hello and read welcome and policies."""
        await self.send(
            {
                "type": "hello",
                "protocol": 1,
                "vault_id": self.agent.vault_id,
                "agent_version": "0.1.0",
                "metadata_key_fingerprint": fingerprint,
                **extra,
            }
        )
        self.welcome = await self.recv("welcome")
        self.policies = (await self.recv("policies"))["policies"]

    async def recv(self, kind: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame (of ``kind``, skipping others); fails on close."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                assert msg.type == aiohttp.WSMsgType.TEXT, (msg, self.ws.close_code)
                frame = json.loads(msg.data)
                if kind is None or frame["type"] == kind:
                    return dict(frame)

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, list[dict[str, Any]]]:
        """Read until the server closes; (close code, frames seen before it)."""
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    seen.append(json.loads(msg.data))
                    continue
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                ):
                    return self.ws.close_code, seen
                raise AssertionError(f"unexpected message {msg}")

    async def heartbeat(self, **health: Any) -> None:
        """Send a heartbeat (healthy unless told otherwise)."""
        await self.send({"type": "heartbeat", "health": {"status": "healthy", **health}})

    async def events(self, stream: str, batch: list[dict[str, Any]]) -> dict[str, Any]:
        """Send a batch and return the ack."""
        await self.send({"type": "events", "stream": stream, "batch": batch})
        return await self.recv("ack")

    async def close(self) -> None:
        """Close the socket and the HTTP session."""
        await self.ws.close()
        await self.session.close()


def event(seq: int, kind: str, data: dict[str, Any], prefix: str = "o") -> dict[str, Any]:
    """One stream event."""
    return {
        "id": f"{prefix}{seq}",
        "seq": seq,
        "kind": kind,
        "at": "2026-03-01T10:00:00Z",
        "data": data,
    }


async def bootstrap(gateway_url: str) -> dict[str, Any]:
    """GET /agent/bootstrap without verifying the server."""
    async with aiohttp.ClientSession() as session:
        resp = await session.get(gateway_url + uplink.BOOTSTRAP_PATH, ssl=insecure_context())
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


async def enroll(api: Api, owner: str, folder: Path, name: str = "vault-1") -> Enrolled:
    """Enroll a mock agent through the gateway, exactly as docs/uplink.md describes."""
    assert api.gateway is not None, "the gateway is not running"
    gateway_url = api.gateway.url
    status, created = await api.call("POST", "/enrollment-tokens", owner, json={})
    assert status == 201, created
    token = created["token"]
    boot = await bootstrap(gateway_url)
    assert spki_pin(boot["ca_certificate"]) == "sha256:" + token.split(".")[1]
    folder.mkdir(parents=True, exist_ok=True)
    csr, key = make_csr("agent")
    ctx = client_context(ca_pem=boot["ca_certificate"])
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            gateway_url + uplink.REGISTER_PATH,
            json={"token": token, "csr": csr.decode(), "name": name, "agent_version": "0.1.0"},
            ssl=ctx,
        )
        ident = await resp.json()
        assert resp.status == 201, ident
    write_pem(folder / "client.key", key, private=True)
    write_pem(folder / "client.crt", (ident["certificate"] + ident["ca_certificate"]).encode())
    return Enrolled(ident["vault_id"], gateway_url, folder, boot["ca_certificate"], name)


async def org_id(api: Api, owner: str) -> str:
    """The organisation id of a session."""
    status, me = await api.call("GET", "/me", owner)
    assert status == 200
    return str(me["org"]["id"])
