"""The agent as a real process: mutual TLS on the socket, plain HTTP refusal, SIGTERM, the
single-instance lock, secrets kept out of logs, durability under ``kill -9``, and an audit log
that fails closed.

Every test here talks to ``keyvault agent run`` over real TLS 1.3 sockets; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import os
import random
import resource
import secrets
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from agent.assembly import Agent, key_source
from agent.audit import verify as verify_audit
from agent.keys import KeyManager
from agent.settings import load_agent_settings
from agent.store.db import Store
from common.client import AgentClient
from common.errors import (
    ConflictError,
    KeyVaultError,
    NotFoundError,
    UnavailableError,
)
from common.pki import CertificateAuthority
from common.tls import client_context
from tests.conftest import AgentDir, AgentProcess, init_agent_dir, start_agent

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "apps.cli.main"]


# --------------------------------------------------------------------------- helpers


def _tls_ctx(tls: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A TLS 1.3 client context trusting the agent's CA, with an optional client chain."""
    return client_context(tls / "ca.crt", cert_file=cert, key_file=key)


def _http(running: AgentProcess, token: str | None = None) -> httpx.Client:
    """A raw httpx client (mutual TLS, bearer token) for checking status codes and bodies."""
    tls = running.dir.tls
    return httpx.Client(
        base_url=running.url,
        verify=_tls_ctx(tls, tls / "client.crt", tls / "client.key"),
        headers={"Authorization": f"Bearer {token or running.dir.token}"},
        timeout=30,
    )


def _probe(url: str, ctx: ssl.SSLContext) -> bytes:
    """One raw HTTPS request on a fresh socket; returns the first bytes of the answer, or
    ``b"refused: handshake …"`` / ``b"refused: after handshake …"`` when TLS stops it.

    With TLS 1.3 the client finishes its side of the handshake before the server has checked
    the client certificate, so a refused certificate shows up on the first read.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    with socket.create_connection((host, port), timeout=15) as raw:
        try:
            tls = ctx.wrap_socket(raw, server_hostname=host)
        except (ssl.SSLError, OSError) as exc:
            return f"refused: handshake: {exc!r}".encode()
        with tls:
            request = f"GET /api/v1/health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            try:
                tls.sendall(request.encode())
                return tls.recv(200) or b"refused: after handshake: connection closed"
            except (ssl.SSLError, OSError) as exc:
                return f"refused: after handshake: {exc!r}".encode()


def _write_pair(folder: Path, stem: str, pair: tuple[bytes, bytes]) -> tuple[Path, Path]:
    cert, key = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert.write_bytes(pair[0])
    key.write_bytes(pair[1])
    return cert, key


def _forms(value: str) -> dict[str, bytes]:
    """``value`` as it could leak: plain, hex, and base64 (standard and URL-safe) at all
    three byte alignments, keeping only the characters that do not depend on neighbours."""
    raw = value.encode()
    forms = {"plain": raw, "hex": raw.hex().encode(), "HEX": raw.hex().upper().encode()}
    for shift in range(3):
        first = -(-8 * shift // 6)  # characters touched by the bytes before the value
        last = 8 * (shift + len(raw)) // 6  # characters made only of the value's bits
        for name, encode in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            forms[f"{name}@{shift}"] = encode(b"\0" * shift + raw)[first:last]
    return forms


def _leaks(blob: bytes, values: dict[str, str]) -> list[str]:
    """Which of ``values`` (label -> value) appear in ``blob`` in any form of :func:`_forms`."""
    found = []
    for label, value in values.items():
        for form, needle in _forms(value).items():
            if needle in blob:
                found.append(f"{label} as {form}")
    return found


def _run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _open_settings(folder: AgentDir) -> Any:
    return load_agent_settings(None, folder.path)


def _audit_report(folder: AgentDir) -> Any:
    """Verify the folder's audit chain in-process with the vault's own audit key."""
    settings = _open_settings(folder)
    store = Store(settings.storage_url)
    try:
        keys = KeyManager.unlock(store, key_source(settings))
    finally:
        store.close()
    return verify_audit(settings.data_dir, keys.audit_key)


def _tail(path: Path, size: int = 3000) -> str:
    return path.read_bytes()[-size:].decode(errors="replace") if path.exists() else ""


# --------------------------------------------------------------------------- mutual TLS


@pytest.fixture
def strict_agent(tmp_path: Path) -> Iterator[AgentProcess]:
    """An agent that requires client certificates (``client_cert: required``)."""
    folder = init_agent_dir(tmp_path / "agent", client_cert="required")
    running = start_agent(folder)
    try:
        yield running
    finally:
        running.stop()


def test_tls12_and_bad_client_certificates_are_refused_on_the_socket(
    strict_agent: AgentProcess, tmp_path: Path
) -> None:
    tls = strict_agent.dir.tls
    url = strict_agent.url

    # A client that speaks at most TLS 1.2 never completes a handshake (even with a good cert).
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.load_verify_locations(tls / "ca.crt")
    old.load_cert_chain(tls / "client.crt", tls / "client.key")
    assert _probe(url, old).startswith(b"refused: handshake: SSL"), _probe(url, old)

    # The agent's own CA signs a certificate that expired an hour ago, and one not valid yet.
    ca = CertificateAuthority.load((tls / "ca.crt").read_bytes(), (tls / "ca.key").read_bytes())
    now = datetime.now(UTC)
    expired = _write_pair(
        tmp_path,
        "expired",
        ca.issue_client_cert(
            "keyvault-admin", not_before=now - timedelta(hours=2), valid_for=timedelta(hours=1)
        ),
    )
    future = _write_pair(
        tmp_path,
        "future",
        ca.issue_client_cert(
            "keyvault-admin", not_before=now + timedelta(hours=1), valid_for=timedelta(hours=1)
        ),
    )
    foreign_ca = CertificateAuthority.create("Somebody else's CA")
    foreign = _write_pair(tmp_path, "foreign", foreign_ca.issue_client_cert("keyvault-admin"))
    fresh = _write_pair(tmp_path, "fresh", ca.issue_client_cert("workload-7"))

    refused = {
        "no certificate": (None, None),
        "foreign CA": foreign,
        "expired": expired,
        "not yet valid": future,
    }
    for what, (cert, key) in refused.items():
        answer = _probe(url, _tls_ctx(tls, cert, key))
        assert answer.startswith(b"refused: "), f"{what}: the agent answered {answer[:60]!r}"
        # The product's own client reports it as an unreachable agent, not as data.
        with (
            AgentClient(
                url, strict_agent.dir.token, ca_file=tls / "ca.crt", cert_file=cert, key_file=key
            ) as kv,
            pytest.raises(UnavailableError),
        ):
            kv.health()

    # The certificate made by `init`, and any other current one from the agent's CA, work.
    for cert, key in [(tls / "client.crt", tls / "client.key"), fresh]:
        assert _probe(url, _tls_ctx(tls, cert, key)).startswith(b"HTTP/1.1 200")
        with AgentClient(
            url, strict_agent.dir.token, ca_file=tls / "ca.crt", cert_file=cert, key_file=key
        ) as kv:
            kv.create(f"tls/ok-{cert.stem}", "through mutual TLS")
            assert kv.get(f"tls/ok-{cert.stem}")["value"] == "through mutual TLS"
    assert strict_agent.proc.poll() is None, "refused handshakes must not hurt the agent"


def test_optional_client_certs_still_refuse_a_foreign_certificate(
    agent_process: AgentProcess, tmp_path: Path
) -> None:
    tls = agent_process.dir.tls
    with agent_process.client(cert=False) as kv:  # optional: no certificate is fine
        kv.create("opt/a", "no client cert needed")
        assert kv.get("opt/a")["value"] == "no client cert needed"
    foreign = _write_pair(
        tmp_path, "foreign", CertificateAuthority.create("Other CA").issue_client_cert("x")
    )
    answer = _probe(agent_process.url, _tls_ctx(tls, *foreign))
    assert answer.startswith(b"refused: "), answer[:60]


# --------------------------------------------------------------------------- plain HTTP


def test_plain_http_is_refused_off_loopback_and_served_on_loopback(agent_dir: AgentDir) -> None:
    data = str(agent_dir.path)
    plain = {"KEYVAULT_TLS__ENABLED": "false"}
    refused = _run_cli(
        "agent", "run", "--data-dir", data, env={**plain, "KEYVAULT_BIND": "0.0.0.0"}
    )
    assert refused.returncode == 78, refused
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), refused.stderr
    assert "tls.enabled" in lines[0] and "0.0.0.0" in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout
    assert not (agent_dir.path / "agent.url").exists()

    # On loopback, plain HTTP is allowed for development.
    running = start_agent(agent_dir, env=plain)
    try:
        assert running.url.startswith("http://127.0.0.1:")
        with AgentClient(running.url, agent_dir.token) as kv:
            kv.create("dev/x", "plain on loopback")
            assert kv.get("dev/x")["value"] == "plain on loopback"
    finally:
        assert running.stop() == 0


# --------------------------------------------------------------------------- SIGTERM


def _seed(folder: AgentDir, count: int) -> dict[str, str]:
    """``count`` secrets written through the agent's own service layer (no process running)."""
    values = {f"bulk/s{i:05d}": f"bulk-value-{i}-{secrets.token_hex(4)}" for i in range(count)}

    async def write() -> None:
        agent = await asyncio.to_thread(Agent.open, _open_settings(folder))
        try:
            await asyncio.gather(*(agent.secrets.create(n, v) for n, v in values.items()))
        finally:
            await asyncio.to_thread(agent.close)

    asyncio.run(write())
    return values


@dataclass
class _Reads:
    ok: int = 0
    wrong: list[str] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


def _reader(
    running: AgentProcess, values: dict[str, str], out: _Reads, stop: threading.Event
) -> None:
    names = list(values)
    with running.client() as kv:
        while not stop.is_set():
            name = random.choice(names)
            try:
                doc = kv.get(name)
            except KeyVaultError as exc:
                out.errors.append(exc)
                return
            if doc.get("value") != values[name] or doc.get("name") != name:
                out.wrong.append(name)
            out.ok += 1


def test_sigterm_lets_in_flight_work_finish_then_exits_zero(tmp_path: Path) -> None:
    folder = init_agent_dir(tmp_path / "agent")
    values = _seed(folder, 1000)
    shutdown_timeout = 10.0
    running = start_agent(folder, env={"KEYVAULT_SHUTDOWN_TIMEOUT": str(shutdown_timeout)})
    pid = running.proc.pid

    # A second agent on the same folder is refused while this one runs.
    second = _run_cli("agent", "run", "--data-dir", str(folder.path))
    assert second.returncode == 75, second
    err = second.stderr.strip()
    assert err.startswith("error: another agent") and f"pid {pid}" in err, err
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert running.proc.poll() is None

    reads, stop = _Reads(), threading.Event()
    readers = [
        threading.Thread(target=_reader, args=(running, values, reads, stop)) for _ in range(3)
    ]
    try:
        for t in readers:
            t.start()
        _wait_for(lambda: reads.ok >= 20, 30, "concurrent reads")

        # A KEK rotation of every data key is in flight, with reads, when SIGTERM arrives. The
        # test holds the store's write lock (well inside the agent's 10 s busy timeout) so the
        # rotation cannot finish before the signal however fast the machine: CI once re-wrapped
        # all 1,000 keys before the first poll saw any progress.
        hold = sqlite3.connect(folder.path / "store.db", timeout=30, isolation_level=None)
        try:
            hold.execute("BEGIN IMMEDIATE")
            with running.client() as kv:
                job = kv.rotate_kek()
                time.sleep(0.5)
                seen = kv.job(job["id"])
            assert seen["state"] == "running" and seen["done"] == 0, seen
            started_at = time.monotonic()
            running.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert running.proc.poll() is None, "the agent waits for the rotation in flight"
        finally:
            hold.execute("ROLLBACK")
            hold.close()
        code = running.proc.wait(timeout=shutdown_timeout + 20)
        elapsed = time.monotonic() - started_at
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=60)
        if running.proc.poll() is None:
            running.proc.kill()
    log = (folder.path / "agent.log").read_text(errors="replace")
    assert code == 0, log[-3000:]
    assert elapsed < shutdown_timeout + 5, f"took {elapsed:.1f}s to stop"
    assert "agent stopped" in log and "Traceback" not in log, log[-3000:]
    assert not (folder.path / "agent.url").exists(), "a clean stop removes agent.url"
    # Every answer that arrived was complete and right; the rest failed as transport errors.
    assert reads.ok >= 20 and reads.wrong == [], reads.wrong[:5]
    assert all(
        isinstance(e, UnavailableError) and "cannot reach the agent" in e.message
        for e in reads.errors
    ), reads.errors

    restarted = start_agent(folder)
    try:
        with restarted.client() as kv:
            keks = kv.keys()
            # The rotation was allowed to finish during shutdown: one KEK left, wrapping all.
            live = [k for k in keks["keks"] if k["state"] != "destroyed"]
            assert keks["active"] == 2 and live == [
                {**live[0], "version": 2, "state": "active", "values": len(values)}
            ], keks
            listed, after = [], None
            while True:
                page = kv.list("bulk/", after, 1000)
                listed += [m["name"] for m in page["secrets"]]
                after = page["next"]
                if not after:
                    break
            assert sorted(listed) == sorted(values)
            for name in random.sample(sorted(values), 30):
                assert kv.get(name)["value"] == values[name]
    finally:
        assert restarted.stop() == 0

    async def read_all() -> dict[str, str]:
        agent = await asyncio.to_thread(Agent.open, _open_settings(folder))
        try:
            return {n: (await agent.secrets.reveal(n, None))[2] for n in values}
        finally:
            await asyncio.to_thread(agent.close)

    assert asyncio.run(read_all()) == values
    assert _audit_report(folder).ok


# --------------------------------------------------------------------------- secrets in logs


def _raw_tls_request(running: AgentProcess, payload: bytes) -> bytes:
    parts = urlsplit(running.url)
    tls = running.dir.tls
    ctx = _tls_ctx(tls, tls / "client.crt", tls / "client.key")
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as raw:
        with ctx.wrap_socket(raw, server_hostname=parts.hostname) as sock:
            sock.sendall(payload)
            chunks = []
            with contextlib.suppress(ssl.SSLError, OSError):
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            return b"".join(chunks)


def test_no_secret_value_or_token_reaches_logs_audit_or_store_in_clear(
    agent_dir: AgentDir,
) -> None:
    running = start_agent(agent_dir, env={"KEYVAULT_LOG_LEVEL": "DEBUG"})
    canaries = {f"canary{i}": f"KVCANARY{i}-{secrets.token_hex(20)}" for i in range(6)}
    tokens = {"admin token": agent_dir.token}
    try:
        with running.client() as kv:
            for i in range(3):
                kv.create(
                    f"logs/s{i}",
                    canaries[f"canary{i}"],
                    description="log test",
                    labels={"team": "qa"},
                )
            kv.update("logs/s0", canaries["canary3"])
            assert kv.get("logs/s0", version=1)["value"] == canaries["canary0"]
            assert kv.get("logs/s0")["value"] == canaries["canary3"]
            kv.rotate("logs/s1")
            canaries["rotated"] = kv.get("logs/s1")["value"]
            reader = kv.create_token("log reader", [{"path": "other/**", "capabilities": ["read"]}])
            tokens["new token"] = reader["token"]
            job = kv.rotate_kek()
            _wait_for(lambda: kv.job(job["id"])["state"] != "running", 30, "KEK rotation")
            assert kv.job(job["id"])["state"] == "succeeded"
            for i in range(3):
                assert kv.get(f"logs/s{i}")["value"]

        c4, c5 = canaries["canary4"], canaries["canary5"]
        with _http(running) as http:
            failures = [
                http.post("/api/v1/secrets", json={"name": "logs/s2", "value": c4}),  # 409
                http.post("/api/v1/secrets", json={"name": "bad name!", "value": c4}),  # 400
                http.post("/api/v1/secrets", json={"name": "logs/n", "value": c4, "x": c5}),
                http.post(
                    "/api/v1/secrets",
                    content=b'{"name": "logs/j", "value": "' + c4.encode(),
                    headers={"Content-Type": "application/json"},
                ),  # truncated JSON
                http.post("/api/v1/secrets", json={"name": "logs/big", "value": c5 * 1700}),
                http.post("/api/v1/secrets", json={"name": "logs/huge", "value": c5 * 7000}),
                http.put("/api/v1/secrets/logs%2Fnope", json={"value": c4}),  # 404
                http.get(f"/api/v1/secrets/logs%2Fs0?version={quote(c5)}"),
                http.get(f"/api/v1/secrets?token={agent_dir.token}"),
            ]
        with _http(running, token=agent_dir.token + "x") as http:
            failures.append(http.post("/api/v1/secrets", json={"name": "logs/w", "value": c4}))
        with _http(running, token=tokens["new token"]) as http:
            failures.append(http.post("/api/v1/secrets", json={"name": "logs/r", "value": c5}))
        statuses = [r.status_code for r in failures]
        assert statuses == [409, 400, 400, 400, 400, 413, 404, 400, 400, 401, 403], statuses
        for resp in failures[:7]:  # error bodies never echo a submitted value
            assert resp.json()["error"]["code"] and not _leaks(resp.content, canaries)
    finally:
        running.stop(signal.SIGKILL)  # keep the WAL as it is, for the store check below

    data = agent_dir.path
    agent_log, audit_log = (data / "agent.log").read_bytes(), (data / "audit.log").read_bytes()
    assert b"serving vault" in agent_log and b"DEBUG" in agent_log
    entries = [json.loads(line) for line in audit_log.splitlines()]
    assert {e["status"] for e in entries} >= {200, 201, 400, 401, 403, 404, 409, 413}
    for name in ("agent.log", "audit.log", "audit.head"):
        blob = (data / name).read_bytes()
        assert _leaks(blob, {**canaries, **tokens}) == [], name
    store_files = [p for p in data.glob("store.db*") if p.is_file()]
    assert {p.name for p in store_files} >= {"store.db", "store.db-wal"}
    for path in store_files:
        assert _leaks(path.read_bytes(), {**canaries, **tokens}) == [], path.name


def test_a_malformed_request_never_logs_its_raw_headers(agent_process: AgentProcess) -> None:
    """A request the HTTP parser rejects (a control character in a header) gets a 400, and
    the agent's log must not quote the raw header bytes: here they carry the admin token and
    a secret value a client put in a header."""
    value = "KVCANARY-hdr-" + secrets.token_hex(20)
    token = agent_process.dir.token
    requests = [
        f"GET /api/v1/secrets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\x01\r\n\r\n",
        f"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Db-Password\x01: {value}\r\n\r\n",
    ]
    for request in requests:
        answer = _raw_tls_request(agent_process, request.encode())
        assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:100]
    assert agent_process.stop() == 0
    log = (agent_process.dir.path / "agent.log").read_bytes()
    assert b"agent stopped" in log
    assert _leaks(log, {"admin token": token, "header value": value}) == [], _tail(
        agent_process.dir.path / "agent.log", 1500
    )


# --------------------------------------------------------------------------- kill -9 durability

_ZYGOTE = r"""
import os, signal, sys
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed agents are reaped by the kernel
import apps.cli.main
import agent.serve, agent.logs, agent.api.app, agent.assembly
print("ready", flush=True)
for line in sys.stdin:
    data_dir, log_path = line.rstrip("\n").split("\t")
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0); os.dup2(fd, 1); os.dup2(fd, 2)
        sys.argv = ["keyvault", "agent", "run", "--data-dir", data_dir]
        code = 70
        try:
            apps.cli.main.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            os._exit(code)
    print(pid, flush=True)
"""


class _Zygote:
    """A process with the agent's modules already imported that forks fresh agents on demand.

    Each agent is a real process running the ``keyvault agent run`` command (the same click
    command and code path), started in ~0.2 s instead of ~1.5 s of imports, which keeps 20+
    kill -9 / restart cycles fast.
    """

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def spawn(self, folder: AgentDir, timeout: float = 30) -> tuple[int, str]:
        """Start an agent on ``folder``; returns (pid, url) once it serves."""
        url_file = folder.path / "agent.url"
        url_file.unlink(missing_ok=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{folder.path}\t{folder.path / 'agent.log'}\n")
        self.proc.stdin.flush()
        pid = int(self.proc.stdout.readline())
        deadline = time.monotonic() + timeout
        while not (url_file.exists() and url_file.read_text().strip()):
            if not _alive(pid) or time.monotonic() > deadline:
                _kill(pid)
                raise AssertionError(f"agent failed to start: {_tail(folder.path / 'agent.log')}")
            time.sleep(0.01)
        return pid, url_file.read_text().strip()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_for(lambda: not _alive(pid), 30, f"pid {pid} to die")


@dataclass
class _Name:
    """What the writers know about one secret: its last acknowledged value and version, and
    the values sent after it whose answers never came (each may or may not have landed)."""

    acked: str | None = None
    version: int = 0
    pending: set[str] = field(default_factory=set)


@dataclass
class _Storm:
    names: dict[str, _Name]
    acked_writes: int = 0
    unknown_outcome: int = 0  # writes whose answer never came
    landed: int = 0  # ... of which the restarted agent had kept
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _writer(
    url: str,
    folder: AgentDir,
    mine: list[str],
    storm: _Storm,
    stop: threading.Event,
    counter: Iterator[int],
) -> None:
    tls = folder.tls
    with AgentClient(
        url,
        folder.token,
        ca_file=tls / "ca.crt",
        cert_file=tls / "client.crt",
        key_file=tls / "client.key",
        timeout=20,
    ) as kv:
        while not stop.is_set():
            name = random.choice(mine)
            state = storm.names[name]
            value = f"{name}#{next(counter)}-{secrets.token_hex(6)}"
            try:
                if state.acked is None:
                    try:
                        meta = kv.create(name, value)
                    except ConflictError:  # an earlier unacknowledged create did land
                        meta = kv.update(name, value)
                else:
                    meta = kv.update(name, value)
            except UnavailableError:  # no answer: the agent died; the outcome is unknown
                state.pending.add(value)
                return
            except KeyVaultError as exc:  # any answer but success is a failure of the test
                storm.unexpected.append(f"{name}: {exc!r}")
                state.pending.add(value)
                return
            with storm.lock:
                state.acked, state.version = value, int(meta["version"])
                state.pending.clear()
                storm.acked_writes += 1


def _check_durable(url: str, folder: AgentDir, storm: _Storm) -> int:
    """Every acknowledged write is there with its latest value; returns names checked."""
    tls = folder.tls
    checked = 0
    with AgentClient(
        url,
        folder.token,
        ca_file=tls / "ca.crt",
        cert_file=tls / "client.crt",
        key_file=tls / "client.key",
        timeout=20,
    ) as kv:
        for name, state in storm.names.items():
            if state.acked is None and not state.pending:
                continue
            try:
                doc = kv.get(name)
                value, version = doc["value"], int(doc["version"])
            except NotFoundError:
                value, version = None, 0
            storm.unknown_outcome += len(state.pending)
            storm.landed += value in state.pending
            assert value == state.acked or value in state.pending, (
                f"{name}: found {value!r} (v{version}); last acknowledged {state.acked!r} "
                f"(v{state.version}); unacknowledged {sorted(state.pending)}"
            )
            if value == state.acked:
                assert version == state.version, (name, version, state.version)
            else:
                assert version > state.version, (name, version, state.version)
            state.acked, state.version = value, version
            state.pending.clear()
            checked += 1
    return checked


def _integrity_ok(db: Path) -> None:
    conn = sqlite3.connect(db, timeout=30)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    folder = init_agent_dir(tmp_path / "agent")
    cycles, threads, per_thread = 20, 3, 8
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    groups = [[f"dur/t{t}/n{j}" for j in range(per_thread)] for t in range(threads)]
    storm = _Storm({n: _Name() for group in groups for n in group})
    counter = iter(range(1, 1 << 62))
    checks = kills = 0
    zygote = _Zygote()
    first: AgentProcess | None = None
    pid = 0

    def kill_agent() -> None:
        if first is not None and first.proc.pid == pid:
            first.proc.kill()  # our own child: reap it, or it lingers as a zombie
            first.proc.wait(timeout=30)
        else:
            _kill(pid)

    try:
        for cycle in range(cycles):
            if cycle == 0:  # the first start is the plain command, later ones are forked
                first = start_agent(folder)
                pid, url = first.proc.pid, first.url
            else:
                pid, url = zygote.spawn(folder)
            checks += _check_durable(url, folder, storm)
            _integrity_ok(folder.path / "store.db")
            stop = threading.Event()
            writers = [
                threading.Thread(target=_writer, args=(url, folder, g, storm, stop, counter))
                for g in groups
            ]
            before = storm.acked_writes
            for w in writers:
                w.start()
            _wait_for(
                lambda n=before: storm.acked_writes > n or bool(storm.unexpected),
                60,
                f"cycle {cycle}: a first acknowledged write",
            )
            time.sleep(rng.uniform(0.15, 0.5))  # then kill at a random moment of the storm
            kill_agent()
            kills += 1
            stop.set()
            for w in writers:
                w.join(timeout=60)
                assert not w.is_alive()
            assert storm.unexpected == [], storm.unexpected
            assert storm.acked_writes > before, f"cycle {cycle}: no write was acknowledged"
        pid, url = zygote.spawn(folder)
        checks += _check_durable(url, folder, storm)
        _integrity_ok(folder.path / "store.db")
        os.kill(pid, signal.SIGTERM)
        _wait_for(lambda: not _alive(pid), 30, "the agent to stop")
        pid = 0
    finally:
        if pid:
            kill_agent()
        zygote.close()
    assert kills >= 20 and checks >= kills * len(storm.names) // 2
    print(
        f"\nkill -9 cycles: {kills}, acknowledged writes: {storm.acked_writes}, "
        f"per-name checks: {checks}, writes cut off by a kill: {storm.unknown_outcome} "
        f"({storm.landed} of them had landed), seed: {seed}"
    )
    result = _run_cli("agent", "audit", "verify", "--data-dir", str(folder.path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit log OK" in result.stdout


# --------------------------------------------------------------------------- audit fails closed


@contextlib.contextmanager
def _small_tmpfs(where: Path) -> Iterator[bool]:
    """Mount a 4 MiB tmpfs at ``where`` when allowed (root); yields whether it was mounted."""
    where.mkdir(parents=True)
    command = ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(where)]
    try:
        mounted = subprocess.run(command, capture_output=True, check=False).returncode == 0
    except OSError:  # no mount(8) here
        mounted = False
    try:
        yield mounted
    finally:
        if mounted and subprocess.run(["umount", str(where)], check=False).returncode:
            subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path) -> Path:
    """Write a file until the filesystem is full (ENOSPC); returns it."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 512)
    return filler


def _refused_cleanly(resp: httpx.Response, *values: str) -> None:
    assert resp.status_code == 503, (resp.status_code, resp.text[:200])
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json()["error"]["code"] == "unavailable"
    assert "audit" in resp.json()["error"]["message"]
    for value in values:
        assert not _leaks(resp.content, {"value": value})


def test_audit_log_failure_refuses_requests_on_a_real_process(tmp_path: Path) -> None:
    """Two real ways a write to audit.log fails: the kernel's file-size limit (EFBIG) set on
    the running agent with prlimit(2), and, where a tmpfs can be mounted, a full disk (ENOSPC).
    """
    with _small_tmpfs(tmp_path / "mnt") as on_tmpfs:
        folder = init_agent_dir(tmp_path / "mnt" / "agent")
        log_outside = tmp_path / "agent.log"  # keep the agent's own log off the full disk
        log_outside.touch()
        (folder.path / "agent.log").symlink_to(log_outside)
        value, other = "fail-closed-" + secrets.token_hex(16), "never-" + secrets.token_hex(16)
        running = start_agent(folder)
        try:
            with _http(running) as http:
                assert (
                    http.post("/api/v1/secrets", json={"name": "fc/a", "value": value}).status_code
                    == 201
                )
                for _ in range(10):  # the audit log is now well past the agent's own log
                    assert http.get("/api/v1/secrets/fc%2Fa").json()["value"] == value

                # 1. A file-size limit at the audit log's current size: no entry fits.
                limit = (folder.path / "audit.log").stat().st_size
                hard = resource.prlimit(running.proc.pid, resource.RLIMIT_FSIZE)[1]
                resource.prlimit(running.proc.pid, resource.RLIMIT_FSIZE, (limit, hard))
                try:
                    _refused_cleanly(http.get("/api/v1/secrets/fc%2Fa"), value)
                    _refused_cleanly(http.get("/api/v1/secrets/fc%2Fa?version=1"), value)
                    # A write is refused before it runs: its intent entry cannot be logged.
                    _refused_cleanly(http.put("/api/v1/secrets/fc%2Fa", json={"value": other}))
                    assert (folder.path / "audit.log").stat().st_size == limit
                finally:
                    resource.prlimit(running.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
                resp = http.get("/api/v1/secrets/fc%2Fa")
                assert resp.status_code == 200 and resp.json()["value"] == value
                assert resp.json()["version"] == 1, "the refused write must not have happened"

                # 2. A full disk, when this machine lets us mount a small tmpfs.
                if on_tmpfs:
                    filler = _fill(folder.path)
                    try:
                        statuses = []
                        for _ in range(60):  # the log's last page may still hold a few entries
                            resp = http.get("/api/v1/secrets/fc%2Fa")
                            statuses.append(resp.status_code)
                            if resp.status_code != 200:
                                break
                        assert statuses[-1] == 503 and len(statuses) < 60, statuses
                        _refused_cleanly(resp, value)
                        for _ in range(3):
                            _refused_cleanly(http.get("/api/v1/secrets/fc%2Fa"), value)
                    finally:
                        filler.unlink()
                    resp = http.get("/api/v1/secrets/fc%2Fa")
                    assert resp.status_code == 200 and resp.json()["value"] == value

                metrics = http.get("/api/v1/metrics").text
                failures = next(
                    line
                    for line in metrics.splitlines()
                    if line.startswith("keyvault_audit_failures_total")
                )
                assert int(failures.split()[1]) >= (7 if on_tmpfs else 3), failures
        finally:
            code = running.stop()
        assert code == 0, _tail(log_outside)
        assert b"audit log write failed" in log_outside.read_bytes()
        report = _audit_report(folder)
        assert report.ok, report.problems
