"""The reading side of a VaultSecret sync against a REAL agent process over mutual TLS.

``keyvault agent run`` is started on a folder initialised with client certificates required.
The CA and the client certificate reach the operator the way they do in a cluster: as Secrets
(served by the recorded-response API server). The login step here is a normal agent token
limited to ``shop/**`` (read only), so these tests isolate the TLS and read path (TLS context
from Secret PEMs, reads, rendering, apply); the real JWT login with a service-account token,
and the change-stream daemon, are in ``test_vaultsecret_jwt.py``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from aiohttp import web

from common.pki import CertificateAuthority
from common.tls import server_context
from k8s_operator import vaultsecret_handlers as handlers
from k8s_operator.secret_sync import StaticToken
from tests.conftest import AgentProcess, init_agent_dir, start_agent
from tests.k8s.recorded_api import RecordedApiServer

LOG = logging.getLogger("test.k8s.vaultsecret.agent")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, str]]:
    """One real agent (mutual TLS required) with two shop secrets and a read-only token."""
    folder = init_agent_dir(tmp_path_factory.mktemp("vs") / "agent", client_cert="required")
    running = start_agent(folder)
    try:
        with running.client() as kv:
            kv.create("shop/db/password", "Db-Pass-One")
            kv.create("shop/payments/api-key", "pk_live_one")
            kv.create("other/admin", "not-for-the-shop")
            made = kv.create_token("k8s-operator", [{"path": "shop/**", "capabilities": ["read"]}])
        yield running, made["token"]
    finally:
        running.stop()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _server(
    running: AgentProcess, cert: bytes | None = None, key: bytes | None = None
) -> RecordedApiServer:
    tls = running.dir.tls
    server = RecordedApiServer(deployments=False)
    server.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vault-ca", "namespace": "default", "uid": "u1"},
            "type": "Opaque",
            "data": {"ca.crt": _b64((tls / "ca.crt").read_text())},
        }
    )
    server.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "operator-client", "namespace": "default", "uid": "u2"},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": base64.b64encode(cert or (tls / "client.crt").read_bytes()).decode(),
                "tls.key": base64.b64encode(key or (tls / "client.key").read_bytes()).decode(),
            },
        }
    )
    return server


def _body(url: str, *names: str) -> dict[str, Any]:
    keys = {"shop/db/password": "DATABASE_PASSWORD", "shop/payments/api-key": "PAYMENT_API_KEY"}
    return {
        "apiVersion": "keyvault.io/v1",
        "kind": "VaultSecret",
        "metadata": {"name": "shop-env", "namespace": "default", "uid": "vs-uid", "generation": 1},
        "spec": {
            "agent": {
                "url": url,
                "role": "shop",
                "caSecretRef": {"name": "vault-ca"},
                "clientCertSecretRef": {"name": "operator-client"},
            },
            "data": [{"key": keys.get(n, "OTHER"), "secret": n} for n in names],
        },
    }


async def _sync(server: RecordedApiServer, body: dict[str, Any], token: str) -> kopf.Patch:
    patch = kopf.Patch()
    memo = kopf.Memo(api=server.api(), agent_login=StaticToken(token))
    try:
        await handlers.sync_handler(body=body, patch=patch, memo=memo, logger=LOG)
    except kopf.TemporaryError:
        pass  # the status says why
    body["status"] = dict(patch["status"])
    return patch


def _ready(body: dict[str, Any]) -> tuple[str, str]:
    ready = body["status"]["conditions"][0]
    return ready["status"], ready["reason"]


def _data(server: RecordedApiServer) -> dict[str, str]:
    secret = server.stored("Secret", "shop-env")
    assert secret is not None
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


async def test_values_from_a_real_agent_land_in_the_secret_and_follow_a_change(
    agent: tuple[AgentProcess, str],
) -> None:
    running, token = agent
    server = _server(running)
    body = _body(running.url, "shop/db/password", "shop/payments/api-key")
    await _sync(server, body, token)
    assert _ready(body) == ("True", "Synced")
    assert _data(server) == {"DATABASE_PASSWORD": "Db-Pass-One", "PAYMENT_API_KEY": "pk_live_one"}
    first = body["status"]["syncedVersionHash"]
    await _sync(server, body, token)  # unchanged: no second apply
    assert server.count("apply", "Secret") == 1
    with running.client() as kv:
        kv.update("shop/db/password", "Db-Pass-Two")
    await _sync(server, body, token)
    assert _data(server)["DATABASE_PASSWORD"] == "Db-Pass-Two"
    assert body["status"]["syncedVersionHash"] != first
    assert server.count("apply", "Secret") == 2
    assert "Db-Pass" not in str(body["status"])


async def test_a_secret_outside_the_token_policy_fails_and_changes_nothing(
    agent: tuple[AgentProcess, str],
) -> None:
    running, token = agent
    server = _server(running)
    body = _body(running.url, "shop/db/password", "other/admin")
    await _sync(server, body, token)
    status, reason = _ready(body)
    assert status == "False" and reason in ("Forbidden", "SecretNotFound")
    assert "'other/admin'" in body["status"]["message"]
    assert server.stored("Secret", "shop-env") is None
    assert "not-for-the-shop" not in str(body["status"])


async def test_a_wrong_token_is_unauthorized(agent: tuple[AgentProcess, str]) -> None:
    running, _ = agent
    server = _server(running)
    body = _body(running.url, "shop/db/password")
    await _sync(server, body, "kvt_" + "0" * 40)
    assert _ready(body) == ("False", "Unauthorized")
    assert server.stored("Secret", "shop-env") is None


async def test_mutual_tls_is_required_a_foreign_client_certificate_is_refused(
    agent: tuple[AgentProcess, str],
) -> None:
    running, token = agent
    stranger = CertificateAuthority.create("stranger-ca")
    cert, key = stranger.issue_client_cert("operator")
    server = _server(running, cert, key)
    body = _body(running.url, "shop/db/password")
    await _sync(server, body, token)
    assert _ready(body) == ("False", "AgentUnreachable")
    assert "client certificate" in body["status"]["message"]
    assert server.stored("Secret", "shop-env") is None


async def test_a_wrong_ca_is_refused(agent: tuple[AgentProcess, str]) -> None:
    running, token = agent
    server = _server(running)
    other = CertificateAuthority.create("other-ca")
    server.objects[("Secret", "default", "vault-ca")]["data"]["ca.crt"] = _b64(
        other.cert_pem().decode()
    )
    body = _body(running.url, "shop/db/password")
    await _sync(server, body, token)
    assert _ready(body) == ("False", "AgentUnreachable")
    assert "caSecretRef" in body["status"]["message"]


class Stopper:
    """Stands in for kopf's daemon stop flag: the daemon stops at its first wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __bool__(self) -> bool:
        return bool(self.waits)

    async def wait(self, timeout: float) -> None:
        self.waits.append(timeout)


async def test_the_change_daemon_falls_back_to_polling_without_a_stream(
    agent: tuple[AgentProcess, str], caplog: pytest.LogCaptureFixture, aiohttp_server: Any
) -> None:
    """An older agent has no ``/api/v1/changes``: the daemon connects over TLS with the
    VaultSecret's CA and client certificate, is told 404, says so once and waits 5 minutes,
    leaving the work to the refreshInterval poll. (Real agents now have the stream: this one
    serves the agent's certificate and answers 404 the way an agent without the route does;
    the real stream is followed in test_vaultsecret_jwt.py.)"""
    running, token = agent
    tls = running.dir.tls
    app = web.Application()
    seen: list[str] = []

    async def no_route(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        body = {"error": {"code": "not_found", "message": "no route GET /api/v1/changes"}}
        return web.json_response(body, status=404)

    app.router.add_get("/api/v1/changes", no_route)
    old = await aiohttp_server(app, ssl=server_context(tls / "server.crt", tls / "server.key"))
    server = _server(running)
    memo = kopf.Memo(api=server.api(), agent_login=StaticToken(token))
    stopper = Stopper()
    caplog.set_level(logging.INFO)
    body = _body(f"https://127.0.0.1:{old.port}", "shop/db/password")
    await handlers.watch_changes(body=body, memo=memo, logger=LOG, stopped=stopper)
    assert seen == [f"Bearer {token}"]
    assert stopper.waits == [handlers.NO_STREAM_RETRY]
    assert "the agent has no change stream; polling" in caplog.text
