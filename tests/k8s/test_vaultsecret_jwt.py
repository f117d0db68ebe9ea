"""The VaultSecret operator logs in to a REAL agent with its service-account token.

``keyvault agent run`` serves mutual TLS and trusts a Kubernetes-shaped issuer under
``auth.jwt`` (a JWKS file with a key made here, audience ``keyvault-agent``, a role bound to
``system:serviceaccount:keyvault-system:keyvault-operator`` that may read the two synced names).
The operator takes its DEFAULT login path: no login in the memo, the projected token read from
the file ``KEYVAULT_SA_TOKEN_PATH`` names, traded at ``POST /api/v1/auth/jwt``. The CA and the
client certificate come from Secrets served by the recorded-response API server, as in a cluster.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest

from k8s_operator import vaultsecret_handlers as handlers
from k8s_operator.secret_sync import JwtLogin, utcnow
from tests.agent import jwtkit
from tests.agent.jwtkit import Issuer
from tests.conftest import AgentProcess, init_agent_dir, start_agent
from tests.k8s.recorded_api import RecordedApiServer

LOG = logging.getLogger("test.k8s.vaultsecret.jwt")
ROLE = "shop"
SUBJECT = "system:serviceaccount:keyvault-system:keyvault-operator"
AUDIENCE = "keyvault-agent"
TTL_S = 120
NAMES = {"shop/db/password": "DATABASE_PASSWORD", "shop/payments/api-key": "PAYMENT_API_KEY"}


def _auth_jwt(jwks: Path) -> str:
    """The agent.yaml block docs/workloads.md shows for the operator."""
    return f"""
auth:
  jwt:
    issuers:
      - name: cluster
        issuer: {jwtkit.K8S_ISS}
        jwks_file: {jwks}
        audiences: [{AUDIENCE}]
    roles:
      - name: {ROLE}
        issuer: cluster
        bound_subject: "{SUBJECT}"
        policy:
          read: ["shop/db/password", "shop/payments/api-key"]
        ttl_s: {TTL_S}
"""


@pytest.fixture(scope="module")
def cluster_key() -> Issuer:
    return Issuer.rsa("cluster-1")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, cluster_key: Issuer) -> Iterator[AgentProcess]:
    """One real agent (mutual TLS required) trusting the cluster's key for the operator role."""
    folder = init_agent_dir(tmp_path_factory.mktemp("vsjwt") / "agent", client_cert="required")
    jwks = jwtkit.write_jwks(folder.path / "jwks.json", cluster_key)
    with (folder.path / "agent.yaml").open("a") as fh:
        fh.write(_auth_jwt(jwks))
    running = start_agent(folder)
    try:
        with running.client() as kv:
            kv.create("shop/db/password", "Db-Pass-One")
            kv.create("shop/payments/api-key", "pk_live_one")
            kv.create("other/admin", "not-for-the-operator")
        yield running
    finally:
        running.stop()


def _sa_token(tmp_path: Path, key: Issuer, monkeypatch: pytest.MonkeyPatch, **claims: Any) -> str:
    """Mint a projected service-account token, write it where the operator reads it."""
    minted = key.mint(
        jwtkit.k8s_claims("keyvault-system", "keyvault-operator", **{"aud": [AUDIENCE], **claims})
    )
    path = tmp_path / "sa-token"
    path.write_text(minted + "\n")
    monkeypatch.setenv(handlers.TOKEN_PATH_ENV, str(path))
    return minted


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _server(running: AgentProcess) -> RecordedApiServer:
    tls = running.dir.tls
    server = RecordedApiServer(deployments=False)
    server.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vault-ca", "namespace": "default", "uid": "u1"},
            "type": "Opaque",
            "data": {"ca.crt": _b64((tls / "ca.crt").read_bytes())},
        }
    )
    server.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "operator-client", "namespace": "default", "uid": "u2"},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": _b64((tls / "client.crt").read_bytes()),
                "tls.key": _b64((tls / "client.key").read_bytes()),
            },
        }
    )
    return server


def _body(url: str, *names: str) -> dict[str, Any]:
    return {
        "apiVersion": "keyvault.io/v1",
        "kind": "VaultSecret",
        "metadata": {"name": "shop-env", "namespace": "default", "uid": "vs-uid", "generation": 1},
        "spec": {
            "agent": {
                "url": url,
                "role": ROLE,
                "caSecretRef": {"name": "vault-ca"},
                "clientCertSecretRef": {"name": "operator-client"},
            },
            "data": [{"key": NAMES.get(n, "OTHER"), "secret": n} for n in names or NAMES],
        },
    }


async def _sync(memo: kopf.Memo, body: dict[str, Any]) -> None:
    patch = kopf.Patch()
    try:
        await handlers.sync_handler(body=body, patch=patch, memo=memo, logger=LOG)
    except kopf.TemporaryError:
        pass  # the status says why
    body["status"] = dict(patch["status"])


def _ready(body: dict[str, Any]) -> tuple[str, str, str]:
    ready = body["status"]["conditions"][0]
    return ready["status"], ready["reason"], ready["message"]


def _data(server: RecordedApiServer) -> dict[str, str]:
    secret = server.stored("Secret", "shop-env")
    assert secret is not None
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _logins(running: AgentProcess) -> int:
    """How many tokens the agent minted for the operator's JWT logins."""
    with running.client() as kv:
        tokens = kv.list_tokens()["tokens"]
    return sum(1 for t in tokens if t["name"].startswith(f"jwt:{ROLE}:{SUBJECT}"))


def _set(running: AgentProcess, name: str, value: str) -> None:
    with running.client() as kv:
        kv.update(name, value)


async def test_default_login_fills_the_secret_and_reuses_its_token_until_30s_before_expiry(
    agent: AgentProcess,
    cluster_key: Issuer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sa_jwt = _sa_token(tmp_path, cluster_key, monkeypatch)
    server, body = _server(agent), _body(agent.url)
    memo = kopf.Memo(api=server.api())  # no agent_login: the operator's own default
    before = _logins(agent)
    await _sync(memo, body)
    assert _ready(body)[:2] == ("True", "Synced"), body["status"]
    with agent.client() as kv:
        expected = {NAMES[n]: kv.get(n)["value"] for n in NAMES}
    assert _data(server) == expected
    login = memo.agent_login
    assert isinstance(login, JwtLogin) and login.token_path == tmp_path / "sa-token"
    assert _logins(agent) == before + 1
    assert sa_jwt not in repr(login) and sa_jwt not in str(body["status"])

    # the agent token lives TTL_S (120 s): 40 s before its end it is still reused ...
    start = utcnow()
    login.clock = lambda: start + timedelta(seconds=TTL_S - 40)
    _set(agent, "shop/db/password", "Db-Pass-Reused")
    await _sync(memo, body)
    assert _data(server)["DATABASE_PASSWORD"] == "Db-Pass-Reused"
    assert _logins(agent) == before + 1
    # ... and 25 s before its end (inside the 30 s margin) the operator logs in again
    login.clock = lambda: start + timedelta(seconds=TTL_S - 25)
    _set(agent, "shop/db/password", "Db-Pass-Relogin")
    await _sync(memo, body)
    assert _ready(body)[:2] == ("True", "Synced"), body["status"]
    assert _data(server)["DATABASE_PASSWORD"] == "Db-Pass-Relogin"
    assert _logins(agent) == before + 2
    assert "Db-Pass" not in str(body["status"])


async def test_the_role_policy_bounds_what_the_operator_reads(
    agent: AgentProcess,
    cluster_key: Issuer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _sa_token(tmp_path, cluster_key, monkeypatch)
    server, body = _server(agent), _body(agent.url, "shop/db/password", "other/admin")
    await _sync(kopf.Memo(api=server.api()), body)
    status, reason, message = _ready(body)
    assert (status, reason) == ("False", "Forbidden"), message
    assert "'other/admin'" in message and "not-for-the-operator" not in str(body["status"])
    assert server.stored("Secret", "shop-env") is None


@pytest.mark.parametrize(
    ("claims", "words"),
    [
        (
            {"sub": "system:serviceaccount:keyvault-system:default"},
            f"subject does not match role '{ROLE}'",
        ),
        ({"aud": ["kubernetes"]}, f"wrong audience: issuer 'cluster' accepts {AUDIENCE}"),
    ],
    ids=["wrong service account", "wrong audience"],
)
async def test_a_token_for_another_account_or_audience_is_refused_and_the_secret_kept(
    agent: AgentProcess,
    cluster_key: Issuer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    claims: dict[str, Any],
    words: str,
) -> None:
    server, body = _server(agent), _body(agent.url)
    _sa_token(tmp_path, cluster_key, monkeypatch)
    await _sync(kopf.Memo(api=server.api()), body)  # the Secret exists, from a good login
    kept = _data(server)
    _set(agent, "shop/payments/api-key", f"pk_live_{tmp_path.name}")  # a sync would change it
    bad = _sa_token(tmp_path, cluster_key, monkeypatch, **claims)
    await _sync(kopf.Memo(api=server.api()), body)  # a fresh operator: no cached token
    status, reason, message = _ready(body)
    assert (status, reason) == ("False", "Unauthorized"), message
    assert f"the agent refused the login for role '{ROLE}' (401: " in message
    assert words in message
    assert bad not in str(body["status"])
    assert _data(server) == kept
    assert server.count("apply", "Secret") == 1


class Stopper:
    """Stands in for kopf's daemon stop flag, set by the test."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()

    def __bool__(self) -> bool:
        return self.stop.is_set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout)


async def test_the_change_daemon_follows_the_real_stream_with_the_default_login(
    agent: AgentProcess,
    cluster_key: Issuer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon logs in with the service-account token, opens ``GET /api/v1/changes`` over
    mutual TLS and marks the VaultSecret changed when a listed secret changes."""
    _sa_token(tmp_path, cluster_key, monkeypatch)
    server, body = _server(agent), _body(agent.url)
    memo = kopf.Memo(api=server.api())
    stopper = Stopper()
    daemon = asyncio.create_task(
        handlers.watch_changes(body=body, memo=memo, logger=LOG, stopped=stopper)
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        step = 0
        while "vs-uid" not in getattr(memo, "vaultsecret_changed", set()):
            assert loop.time() < deadline, "the daemon saw no change within 20 s"
            assert not daemon.done(), daemon
            step += 1  # the stream may not be open yet: change again until it is seen
            await asyncio.to_thread(_set, agent, "shop/db/password", f"Db-Pass-Stream-{step}")
            await asyncio.sleep(0.3)
        assert isinstance(memo.agent_login, JwtLogin)
    finally:
        stopper.stop.set()
        daemon.cancel()
        with pytest.raises(asyncio.CancelledError):
            await daemon
