"""Issue 15 at the HTTP edge of a real control-plane replica: strict JSON media types, our JSON
error for what the HTTP parser refuses, ``Allow`` on 405, and a request head that does not
arrive in time is cut off, on the operator API and on the agent gateway."""

from __future__ import annotations

import json
import socket
import ssl
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import OWNER_EMAIL, OWNER_PASSWORD, ControlPlane


def _raw(url: str, request: bytes, *, wait: bool = True) -> tuple[bytes, float]:
    """Send raw bytes; returns (answer, seconds until the server closed)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    with socket.create_connection((host, port), timeout=60) as raw:
        sock: socket.socket = raw
        if parts.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # the bootstrap route needs no trust; we probe
            sock = ctx.wrap_socket(raw, server_hostname=host)
        sock.sendall(request)
        started = time.monotonic()
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (ssl.SSLError, OSError):
            pass
        return out, time.monotonic() - started


def test_only_json_bodies_are_accepted(control_plane: ControlPlane) -> None:
    url = control_plane.replicas[0].api_url + "/api/v1/auth/login"
    body = json.dumps({"email": OWNER_EMAIL, "password": OWNER_PASSWORD})
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": ctype} if ctype else {}
        resp = httpx.post(url, content=body, headers=headers, timeout=30)
        assert resp.status_code == 415, (ctype, resp.text)
        assert resp.json()["error"]["code"] == "unsupported_media_type"
    assert httpx.post(url, json=json.loads(body), timeout=30).status_code == 200


@pytest.mark.parametrize("what", ["url", "header"])
def test_parser_refusals_are_our_json_error(control_plane: ControlPlane, what: str) -> None:
    replica = control_plane.replicas[0]
    requests = {
        "url": b"GET /api/v1/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "header": b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",
    }
    for url in (replica.api_url, replica.gateway_url):
        answer, _ = _raw(url, requests[what])
        head, _, body = answer.partition(b"\r\n\r\n")
        assert 400 <= int(head.split()[1]) < 500, head
        assert b"content-type: application/json" in head.lower(), head
        assert set(json.loads(body)["error"]) >= {"code", "message"}
        assert b"bbbbbbbbbb" not in body


def test_405_says_which_methods_are_allowed(control_plane: ControlPlane) -> None:
    resp = httpx.delete(control_plane.replicas[0].api_url + "/api/v1/health", timeout=30)
    assert resp.status_code == 405 and resp.headers["allow"] == "GET"
    assert resp.json()["error"]["code"] == "method_not_allowed"


def test_a_slow_request_head_is_cut_off(control_plane: ControlPlane) -> None:
    replica = control_plane.replicas[0]
    for url in (replica.api_url, replica.gateway_url):
        _, seconds = _raw(url, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        assert seconds < 15, (url, seconds)
