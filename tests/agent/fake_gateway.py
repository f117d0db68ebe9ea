"""A small fake of the control plane's agent gateway, speaking ``docs/uplink.md`` for agent tests.

It runs in its own thread and event loop (so blocking tests and real agent processes can use it
alike) on a real TLS 1.3 listener: a service CA (root), an organisation CA (an intermediate of
it, path length 0) that signs the agents' certificates, and a server certificate for
127.0.0.1/localhost. Every HTTP request and every WebSocket frame is recorded, raw, so tests can
search them for things that must never be sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from common import uplink
from common.pki import CertificateAuthority, generate_private_key
from common.tls import server_context, write_pem


def _ca_cert(
    name: str, key: Any, issuer: CertificateAuthority | None, path_length: int | None
) -> x509.Certificate:
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = (
        issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        if issuer
        else ski
    )
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(aki), critical=False
        )
        .sign(issuer.key if issuer else key, hashes.SHA256())
    )


def make_pki() -> tuple[CertificateAuthority, CertificateAuthority]:
    """(service CA root, organisation CA intermediate)."""
    root_key = generate_private_key()
    root = CertificateAuthority(_ca_cert("Fake service CA", root_key, None, None), root_key)
    org_key = generate_private_key()
    org = CertificateAuthority(_ca_cert("Fake organisation CA", org_key, root, 0), org_key)
    return root, org


@dataclass
class Recorded:
    """One HTTP request as it arrived."""

    method: str
    path: str
    headers: str
    body: bytes


@dataclass
class Session:
    """One uplink socket."""

    vault_id: str
    ws: web.WebSocketResponse
    hello: dict[str, Any] | None = None
    held: list[dict[str, Any]] = field(default_factory=list)  # events frames not acked


class FakeGateway:
    """The fake; use as a context manager (starts and stops its thread)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.service_ca, self.org_ca = make_pki()
        cert, key = self.service_ca.issue_server_cert(["localhost"], ip_addresses=("127.0.0.1",))
        self._cert = write_pem(folder / "gw.crt", cert)
        self._key = write_pem(folder / "gw.key", key, private=True)
        self._ca = write_pem(folder / "service-ca.pem", self.service_ca.cert_pem())
        # behaviour, changeable by tests at any time
        self.bootstrap_ca: CertificateAuthority = self.service_ca  # what bootstrap hands out
        self.cert_valid = timedelta(hours=24)
        self.auto_ack = True
        self.fingerprint: str | object | None = ANY  # the organisation's metadata key
        self.drop_register_answers = 0  # answer this many registrations with a cut connection
        self.renewal_refused = False
        self.heartbeat_interval = 30
        self.welcome_extra: dict[str, Any] = {}  # e.g. {"audit_chains": 64} like a newer CP
        self.commands: list[dict[str, Any]] = []  # sent after every welcome
        self.policies: list[dict[str, Any]] = []
        # records
        self.requests: list[Recorded] = []
        self.raw_frames: list[str] = []
        self.frames: list[dict[str, Any]] = []
        self.accepted: dict[str, list[dict[str, Any]]] = {"outbox": [], "audit": []}
        self.connections = 0
        self.peer_serials: list[int] = []  # the client certificate of each upgraded connection
        self.revoked: set[str] = set()
        self.tokens: dict[str, dict[str, Any]] = {}
        self.sessions: list[Session] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> FakeGateway:
        self._thread.start()
        self.call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.call(self._stop(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get(uplink.BOOTSTRAP_PATH, self._bootstrap)
        app.router.add_post(uplink.REGISTER_PATH, self._register)
        app.router.add_get(uplink.UPLINK_PATH, self._uplink)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        ctx = server_context(self._cert, self._key, client_ca_file=self._ca)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        for s in list(self.sessions):
            await s.ws.close(code=uplink.CLOSE_GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the fake's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def url(self) -> str:
        """The gateway URL an agent enrolls with."""
        return f"https://127.0.0.1:{self.port}"

    def token(self, *, pin_of: CertificateAuthority | None = None) -> str:
        """A fresh single-use enrollment token pinning the service CA (or ``pin_of``)."""
        pin = (pin_of or self.service_ca).pin().removeprefix("sha256:")
        text = f"kve_{secrets.token_urlsafe(24)}.{pin}"
        self.tokens[text] = {"used": False}
        return text

    # ------------------------------------------------------------------ HTTP
    @web.middleware
    async def _record(self, request: web.Request, handler: Callable[..., Any]) -> Any:
        body = await request.read()
        headers = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
        self.requests.append(Recorded(request.method, request.path_qs, headers, body))
        return await handler(request)

    async def _bootstrap(self, request: web.Request) -> web.Response:
        ca = self.bootstrap_ca
        return web.json_response({"ca_certificate": ca.cert_pem().decode(), "pin": ca.pin()})

    def sign(self, csr_pem: str, vault_id: str) -> str:
        """Sign a CSR with the organisation CA, valid from now for :attr:`cert_valid`."""
        now = datetime.now(UTC)
        return self.org_ca.sign_csr(
            csr_pem.encode(), common_name=vault_id, valid_for=self.cert_valid, not_before=now
        ).decode()

    async def _register(self, request: web.Request) -> web.StreamResponse:
        doc = await request.json()
        state = self.tokens.get(doc.get("token"))
        refused = {"error": {"code": "enrollment_refused", "message": "the enrollment token is "
                             "unknown, already used, revoked or expired"}}  # fmt: skip
        if state is None or (state["used"] and state["csr"] != doc["csr"]):
            return web.json_response(refused, status=401)
        if not state["used"]:
            vault_id = "vlt_" + secrets.token_hex(10)
            state.update(used=True, csr=doc["csr"], vault_id=vault_id,
                         cert=self.sign(doc["csr"], vault_id), name=doc["name"])  # fmt: skip
        if self.drop_register_answers > 0:
            self.drop_register_answers -= 1
            assert request.transport is not None
            request.transport.abort()
            raise web.HTTPInternalServerError()
        return web.json_response(
            {
                "vault_id": state["vault_id"],
                "certificate": state["cert"],
                "ca_certificate": self.org_ca.cert_pem().decode(),
                "name": state["name"],
            },
            status=201,
        )

    # ------------------------------------------------------------------ the uplink
    async def _uplink(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der:
            return _error(401, uplink.ERR_NO_CERTIFICATE, "client certificate required")
        peer = x509.load_der_x509_certificate(der)
        vault_id = str(peer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        if vault_id in self.revoked:
            return _error(403, uplink.ERR_REVOKED, f"vault {vault_id} has been revoked")
        ws = web.WebSocketResponse(max_msg_size=uplink.MAX_FRAME)
        await ws.prepare(request)
        self.connections += 1
        self.peer_serials.append(peer.serial_number)
        session = Session(vault_id, ws)
        for old in self.sessions:
            await old.ws.close(code=uplink.CLOSE_REPLACED)
        self.sessions.append(session)
        try:
            await self._serve(session)
        finally:
            self.sessions.remove(session)
        return ws

    async def _serve(self, s: Session) -> None:
        msg = await s.ws.receive(timeout=10)
        if msg.type != WSMsgType.TEXT:
            return
        self._keep(msg.data)
        s.hello = json.loads(msg.data)
        if s.hello.get("vault_id") != s.vault_id:
            await self._refuse(s, uplink.ERR_UNKNOWN_VAULT, "not the certificate's name")
            return
        if (
            self.fingerprint is not ANY
            and s.hello.get("metadata_key_fingerprint") != self.fingerprint
        ):
            await self._refuse(s, uplink.ERR_METADATA_KEY, "not the organisation's key")
            return
        await self._send(s, {"type": "welcome", "protocol": 1, "vault_id": s.vault_id,
                             "server_time": datetime.now(UTC).isoformat(),
                             "heartbeat_interval_seconds": self.heartbeat_interval,
                             **self.welcome_extra})  # fmt: skip
        await self._send(s, {"type": "policies", "policies": self.policies})
        for command in self.commands:
            await self._send(s, command)
        async for msg in s.ws:
            if msg.type != WSMsgType.TEXT:
                break
            self._keep(msg.data)
            frame = json.loads(msg.data)
            if frame["type"] == "events":
                if self.auto_ack:
                    await self.ack(s, frame)
                else:
                    s.held.append(frame)
            elif frame["type"] == "renew":
                if self.renewal_refused:
                    await self._send(s, uplink.error_frame(uplink.ERR_RENEWAL, "refused"))
                else:
                    await self._send(s, {"type": "certificate",
                                         "certificate": self.sign(frame["csr"], s.vault_id),
                                         "ca_certificate": self.org_ca.cert_pem().decode()})  # fmt: skip

    def _keep(self, text: str) -> None:
        self.raw_frames.append(text)
        self.frames.append(json.loads(text))

    async def _send(self, s: Session, frame: dict[str, Any]) -> None:
        await s.ws.send_str(uplink.encode(frame))

    async def _refuse(self, s: Session, code: str, message: str) -> None:
        await self._send(s, uplink.error_frame(code, message))
        await s.ws.close(code=uplink.CLOSE_REFUSED)

    async def ack(self, s: Session, frame: dict[str, Any]) -> None:
        """Accept an events frame and acknowledge it."""
        stream = frame["stream"]
        seen = {e["id"] for e in self.accepted[stream]}
        self.accepted[stream].extend(e for e in frame["batch"] if e["id"] not in seen)
        await self._send(s, {"type": "ack", "stream": stream, "upto": frame["batch"][-1]["seq"]})

    # ------------------------------------------------------------------ test controls
    def ack_held(self) -> None:
        """Acknowledge every held batch of the current socket."""

        async def go() -> None:
            for s in self.sessions:
                held, s.held = s.held, []
                for frame in held:
                    await self.ack(s, frame)

        self.call(go())

    def send(self, frame: dict[str, Any]) -> None:
        """Send a frame on the current socket."""

        async def go() -> None:
            for s in self.sessions:
                await self._send(s, frame)

        self.call(go())

    def drop(self, code: int = uplink.CLOSE_GOING_AWAY) -> None:
        """Close the current socket(s)."""

        async def go() -> None:
            for s in list(self.sessions):
                await s.ws.close(code=code)

        self.call(go())

    def revoke(self, vault_id: str) -> None:
        """Revoke a vault: refuse it now (error + 4403) and at every later upgrade (403)."""
        self.revoked.add(vault_id)

        async def go() -> None:
            for s in list(self.sessions):
                if s.vault_id == vault_id:
                    await self._refuse(s, uplink.ERR_REVOKED, "revoked")

        self.call(go())

    def held_frames(self) -> list[dict[str, Any]]:
        """Events frames received but not acknowledged."""
        return [f for s in self.sessions for f in s.held]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        """Every received frame of one type."""
        return [f for f in list(self.frames) if f.get("type") == kind]

    def events(self, stream: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Every event sent on a stream (acknowledged or not, repeats included)."""
        out = []
        for f in self.of_type("events"):
            if f["stream"] == stream:
                out.extend(e for e in f["batch"] if kind is None or e["kind"] == kind)
        return out


ANY = object()


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def wait_for(check: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    """Poll ``check`` until truthy (blocking)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


async def await_for(check: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    """Poll ``check`` until truthy (async)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
