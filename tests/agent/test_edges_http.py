"""Issue 15 at the HTTP edge of a real agent process: strict JSON media types, our JSON error
shape for what the HTTP parser refuses, ``Allow`` on 405, soft-deleted secrets 404 everywhere,
and failed authentication audited at a bounded rate with a summary."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from common.tls import client_context
from tests.conftest import AgentDir, AgentProcess, init_agent_dir, start_agent

S = "/api/v1/secrets"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    """One agent (mutual TLS required) shared by this module."""
    folder = init_agent_dir(tmp_path_factory.mktemp("edge") / "agent", client_cert="required")
    agent = start_agent(folder)
    try:
        yield agent
    finally:
        agent.stop()


def _http(agent: AgentProcess, token: str | None = None) -> httpx.Client:
    tls = agent.dir.tls
    ctx = client_context(tls / "ca.crt", cert_file=tls / "client.crt", key_file=tls / "client.key")
    headers = {"Authorization": f"Bearer {token or agent.dir.token}"}
    return httpx.Client(base_url=agent.url, verify=ctx, headers=headers, timeout=30)


def _json_error(resp: httpx.Response, status: int) -> dict[str, str]:
    assert resp.status_code == status, (resp.status_code, resp.text[:200])
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) >= {"code", "message"}, body
    return dict(body["error"])


@pytest.mark.parametrize(
    "ctype",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_only_json_bodies_are_accepted(running: AgentProcess, ctype: str | None) -> None:
    body = json.dumps({"name": f"media/{abs(hash(ctype))}", "value": "v"}).encode()
    headers = {"Content-Type": ctype} if ctype else {}
    with _http(running) as http:
        resp = http.post(S, content=body, headers=headers)
        err = _json_error(resp, 415)
        assert "application/json" in err["message"]
        assert http.get(f"{S}/media%2F{abs(hash(ctype))}").status_code == 404
        ok = http.post(S, content=body, headers={"Content-Type": "application/json; charset=utf-8"})
        assert ok.status_code == 201


def _raw(agent: AgentProcess, request: bytes) -> bytes:
    host, port = agent.url.removeprefix("https://").rsplit(":", 1)
    tls = agent.dir.tls
    ctx = client_context(tls / "ca.crt", cert_file=tls / "client.crt", key_file=tls / "client.key")
    with socket.create_connection((host, int(port)), timeout=15) as raw:
        s = ctx.wrap_socket(raw, server_hostname=host)
        s.sendall(request)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ssl.SSLError, OSError):
            pass
        return out


@pytest.mark.parametrize("what", ["url", "header", "header-name", "garbage"])
def test_what_the_http_parser_refuses_gets_our_json_error(running: AgentProcess, what: str) -> None:
    requests = {
        "url": b"GET /api/v1/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "header": b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",
        "header-name": b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n"
        + b"c" * 20000
        + b": 1\r\n\r\n",
        "garbage": b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    }
    answer = _raw(running, requests[what])
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert 400 <= status < 500, head
    assert b"content-type: application/json" in head.lower(), head
    doc = json.loads(body)
    assert set(doc["error"]) >= {"code", "message"}, doc
    assert b"bbbbbbbbbb" not in body and b"cccccccccc" not in body  # nothing echoed back


def test_405_says_which_methods_are_allowed(running: AgentProcess) -> None:
    with _http(running) as http:
        resp = http.patch(S)
        _json_error(resp, 405)
        assert set(resp.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
        resp = http.post("/api/v1/health")
        _json_error(resp, 405)
        assert "GET" in resp.headers["allow"]


def test_a_soft_deleted_secret_is_404_on_every_read(running: AgentProcess) -> None:
    with _http(running) as http:
        made = http.post(S, json={"name": "gone/soon", "value": "v1"}).json()
        assert http.put(f"{S}/{made['id']}", json={"value": "v2"}).status_code == 200
        assert http.delete(f"{S}/{made['id']}").status_code == 200
        for ref in (made["id"], "gone%2Fsoon"):
            for path in (f"{S}/{ref}", f"{S}/{ref}/versions", f"{S}/{ref}?version=1"):
                err = _json_error(http.get(path), 404)
                assert "deleted" in err["message"], (path, err)
        assert http.post(f"{S}/{made['id']}/undelete").status_code == 200
        assert http.get(f"{S}/{made['id']}/versions").status_code == 200


def test_failed_authentication_is_audited_at_a_bounded_rate_with_a_summary(
    tmp_path: Path,
) -> None:
    folder: AgentDir = init_agent_dir(tmp_path / "agent", client_cert="required")
    agent = start_agent(folder)
    try:
        audit = folder.path / "audit.log"
        before = audit.stat().st_size
        with _http(agent, token="kvt_" + "x" * 43) as http:
            for _ in range(300):
                assert http.get(S).status_code == 401
        grown = audit.stat().st_size - before
        assert grown < 300 * 320 / 10, f"300 bad tokens wrote {grown} bytes of audit"
    finally:
        agent.stop()
    # the summary is written at the latest when the agent stops
    entries = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    summaries = [e for e in entries if "auth" in json.dumps(e) and "suppressed" in json.dumps(e)]
    assert summaries, entries[-5:]
    assert time.time()  # the run above is bounded by the 300 requests, not by a sleep
