"""VaultSecret sync against recorded Kubernetes API responses (tests/k8s/recorded/).

The Kubernetes side is the operator's real ``HttpKubeApi`` over a recorded-response server
(:mod:`tests.k8s.recorded_api`); the agent reads are replaced by a dict here (one layer) and
are real in ``test_vaultsecret_agent.py`` (a real agent over mutual TLS).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest

from k8s_operator import vaultsecret_handlers as handlers
from k8s_operator.api import HttpKubeApi
from k8s_operator.secret_sync import (
    AgentConnection,
    Login,
    StaticToken,
    SyncError,
    SyncHttpKubeApi,
    sync,
)
from k8s_operator.vaultsecret import HASH_ANNOTATION, RESTARTED_AT, RESTARTED_FOR
from tests.k8s.recorded_api import RecordedApiServer

LOG = logging.getLogger("test.k8s.vaultsecret")
SHOP = ["shop-admin", "shop-api", "shop-cron", "shop-web", "shop-worker"]  # use shop-env


def vault_secret(name: str = "shop-env", **spec: Any) -> dict[str, Any]:
    """A stored VaultSecret as kopf hands it to a handler."""
    base: dict[str, Any] = {
        "vaultAgentRef": {"name": "production-vault"},
        "agent": {
            "role": "shop",
            "caSecretRef": {"name": "production-vault-ca"},
            "clientCertSecretRef": {"name": "keyvault-operator-client"},
        },
        "data": [
            {"key": "DATABASE_PASSWORD", "secret": "shop/db/password"},
            {"key": "PAYMENT_API_KEY", "secret": "shop/payments/api-key"},
        ],
    }
    base.update(spec)
    return {
        "apiVersion": "keyvault.io/v1",
        "kind": "VaultSecret",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": "b6a0e2c4-1f7d-4e8a-a3b5-9c0d1e2f3a4b",
            "generation": 1,
        },
        "spec": base,
    }


def _secret(name: str, data: dict[str, str], kind: str = "Opaque") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "type": kind,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


class Vault:
    """The values the agent would answer, and what was asked for."""

    def __init__(self, **values: str) -> None:
        self.values = {k.replace("__", "/").replace("_", "-"): v for k, v in values.items()}
        self.reads: list[tuple[str, str, list[str]]] = []
        self.error: SyncError | None = None

    async def read(
        self, conn: AgentConnection, role: str, names: Sequence[str], login: Login
    ) -> dict[str, str]:
        self.reads.append((conn.url, role, list(names)))
        if self.error is not None:
            raise self.error
        return {n: self.values[n] for n in names}


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def server() -> RecordedApiServer:
    server = RecordedApiServer()
    server.put(_secret("production-vault-ca", {"ca.crt": "-----BEGIN CERTIFICATE-----"}))
    server.put(
        _secret(
            "keyvault-operator-client",
            {"tls.crt": "-----BEGIN CERTIFICATE-----", "tls.key": "-----BEGIN PRIVATE KEY-----"},
            "kubernetes.io/tls",
        )
    )
    return server


@pytest.fixture
def vault() -> Vault:
    return Vault(shop__db__password="first-db-pass", shop__payments__api_key="pk_first")


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


class Run:
    """Syncs a body repeatedly, carrying the status forward as kopf would."""

    def __init__(self, server: RecordedApiServer, vault: Vault, body: dict[str, Any]) -> None:
        self.server, self.vault, self.body = server, vault, body
        self.clock = Clock()
        self.sleeps: list[tuple[float, list[str]]] = []  # (seconds, patches so far)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append((seconds, self.patched()))

    def patched(self) -> list[str]:
        return [n for v, k, n in self.server.calls if (v, k) == ("patch", "Deployment")]

    async def once(self) -> Any:
        outcome = await sync(
            self.server.api(),
            self.body,
            StaticToken("kvt_unused"),
            clock=self.clock,
            sleep=self.sleep,
            reader=self.vault.read,
        )
        self.body["status"] = outcome.status
        return outcome


async def test_first_sync_creates_an_owned_typed_secret(
    server: RecordedApiServer, vault: Vault
) -> None:
    run = Run(server, vault, vault_secret(rollout={"enabled": True, "deployments": ["shop-web"]}))
    outcome = await run.once()
    assert ("get", "Secret", "shop-env") in server.calls  # answered with the recorded 404
    assert server.count("apply", "Secret") == 1
    secret = server.stored("Secret", "shop-env")
    assert secret is not None
    assert secret["type"] == "Opaque"
    assert _decoded(secret) == {"DATABASE_PASSWORD": "first-db-pass", "PAYMENT_API_KEY": "pk_first"}
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "VaultSecret",
        "b6a0e2c4-1f7d-4e8a-a3b5-9c0d1e2f3a4b",
        True,
    )
    assert secret["metadata"]["labels"]["keyvault.io/vaultsecret"] == "shop-env"
    digest = secret["metadata"]["annotations"][HASH_ANNOTATION]
    assert outcome.status["syncedVersionHash"] == digest
    ready = outcome.status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Synced")
    # a new Secret restarts nothing: no pod can have read the old content
    assert outcome.restarted == [] and run.patched() == []
    # the VaultAgent's Service URL, with the port from its spec (recorded: 8443)
    assert vault.reads[0][:2] == ("https://production-vault.default.svc:8443", "shop")


async def test_unchanged_content_applies_nothing_and_restarts_nothing(
    server: RecordedApiServer, vault: Vault
) -> None:
    body = vault_secret(
        rollout={
            "enabled": True,
            "selector": {"matchLabels": {"app.kubernetes.io/part-of": "shop"}},
        }
    )
    run = Run(server, vault, body)
    await run.once()
    first_hash = body["status"]["syncedVersionHash"]
    for _ in range(3):
        run.clock.now += timedelta(minutes=10)
        outcome = await run.once()
        assert outcome.applied is False and outcome.restarted == []
    assert server.count("apply", "Secret") == 1
    assert run.patched() == []
    assert body["status"]["syncedVersionHash"] == first_hash


async def test_changed_content_restarts_users_in_batches_of_two(
    server: RecordedApiServer, vault: Vault
) -> None:
    body = vault_secret(
        rollout={
            "enabled": True,
            "selector": {"matchLabels": {"app.kubernetes.io/part-of": "shop"}},
            "batchSize": 2,
        }
    )
    run = Run(server, vault, body)
    await run.once()
    vault.values["shop/db/password"] = "second-db-pass"  # a rotation
    run.clock.now += timedelta(minutes=1)
    outcome = await run.once()
    assert outcome.applied
    assert _decoded(server.stored("Secret", "shop-env"))["DATABASE_PASSWORD"] == "second-db-pass"
    # the five Deployments that use shop-env (env, envFrom, volume, projected, init container);
    # shop-docs carries the label but does not use the Secret
    assert ("list", "Deployment", "app.kubernetes.io/part-of=shop") in server.calls
    assert sorted(outcome.restarted) == SHOP
    assert run.patched() == SHOP  # sorted names, each once
    # 3 batches: [admin, api] then [cron, web] then [worker]; each of the first two is waited
    # for until rolled out (the recorded controller needs one look) before the next starts
    waits = [patched for _, patched in run.sleeps]
    assert waits == [SHOP[:2], SHOP[:4]]
    for name in SHOP:
        template = server.stored("Deployment", name)["spec"]["template"]
        assert template["metadata"]["annotations"][RESTARTED_AT] == "2026-12-07T09:01:00Z"
    assert "shop-docs" not in run.patched()
    assert body["status"]["pendingRestarts"] == []
    assert "restarted" in body["status"]["message"]


async def test_min_interval_defers_a_second_restart_and_pending_ones_run_later(
    server: RecordedApiServer, vault: Vault
) -> None:
    body = vault_secret(
        rollout={"enabled": True, "deployments": ["shop-web", "shop-api"], "minInterval": "5m"}
    )
    run = Run(server, vault, body)
    await run.once()
    vault.values["shop/db/password"] = "second"
    await run.once()
    assert run.patched() == ["shop-web", "shop-api"]
    # another rotation one minute later: both were restarted less than 5m ago
    run.clock.now += timedelta(minutes=1)
    vault.values["shop/db/password"] = "third"
    outcome = await run.once()
    assert outcome.applied and outcome.restarted == []
    assert body["status"]["pendingRestarts"] == ["shop-web", "shop-api"]
    conditions = {c["type"]: c for c in body["status"]["conditions"]}
    assert conditions["RolloutPending"]["status"] == "True"
    assert handlers.due(body, run.clock.now)  # the timer comes back for pending restarts
    # still within 5 minutes: still pending, nothing patched
    run.clock.now += timedelta(minutes=3)
    await run.once()
    assert run.patched() == ["shop-web", "shop-api"]
    # past 5 minutes: restarted once more, then never again for the same content
    run.clock.now += timedelta(minutes=2)
    outcome = await run.once()
    assert outcome.restarted == ["shop-web", "shop-api"]
    assert body["status"]["pendingRestarts"] == []
    for _ in range(3):
        run.clock.now += timedelta(minutes=10)
        await run.once()
    assert run.patched() == ["shop-web", "shop-api"] * 2
    # a stale status (e.g. written by a concurrent attempt) still listing them restarts
    # nothing: each template records the content it was restarted for
    body["status"]["pendingRestarts"] = ["shop-web", "shop-api"]
    run.clock.now += timedelta(minutes=10)
    outcome = await run.once()
    assert outcome.restarted == [] and body["status"]["pendingRestarts"] == []
    assert run.patched() == ["shop-web", "shop-api"] * 2
    template = server.stored("Deployment", "shop-web")["spec"]["template"]["metadata"]
    assert template["annotations"][RESTARTED_FOR].startswith("shop-env:")


async def test_no_rollout_unless_enabled(server: RecordedApiServer, vault: Vault) -> None:
    run = Run(server, vault, vault_secret())
    await run.once()
    vault.values["shop/db/password"] = "rotated"
    outcome = await run.once()
    assert outcome.applied and outcome.restarted == []
    assert server.count("list", "Deployment") == 0 and run.patched() == []


async def _handle(server: RecordedApiServer, vault: Vault, body: dict[str, Any]) -> kopf.Patch:
    patch = kopf.Patch()
    memo = kopf.Memo(api=server.api(), agent_login=StaticToken("kvt_x"), agent_reader=vault.read)
    await handlers.sync_handler(body=body, patch=patch, memo=memo, logger=LOG)
    return patch


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            SyncError("AgentUnreachable", "cannot reach the agent at https://x: ConnectError"),
            "AgentUnreachable",
        ),
        (
            SyncError("Unauthorized", "the agent refused the login for role 'shop' (401)"),
            "Unauthorized",
        ),
        (
            SyncError("SecretNotFound", "cannot read the KeyVault secret 'shop/db/password' (404)"),
            "SecretNotFound",
        ),
    ],
)
async def test_errors_set_ready_false_retry_and_leave_the_secret_untouched(
    server: RecordedApiServer, vault: Vault, error: SyncError, reason: str
) -> None:
    body = vault_secret()
    patch = await _handle(server, vault, body)
    before = json.dumps(server.stored("Secret", "shop-env"), sort_keys=True)
    body["status"] = dict(patch["status"])
    vault.values["shop/db/password"] = "would-be-new"
    vault.error = error
    with pytest.raises(kopf.TemporaryError) as raised:
        await _handle(server, vault, body)
    assert raised.value.delay == 10  # first failure; doubles up to 5 minutes
    assert json.dumps(server.stored("Secret", "shop-env"), sort_keys=True) == before
    assert server.count("apply", "Secret") == 1


async def test_error_status_names_the_reason_and_backs_off(
    server: RecordedApiServer, vault: Vault
) -> None:
    vault.error = SyncError("AgentUnreachable", "cannot reach the agent at https://x: ConnectError")
    body = vault_secret()
    patch = kopf.Patch()
    memo = kopf.Memo(api=server.api(), agent_login=StaticToken("kvt_x"), agent_reader=vault.read)
    with pytest.raises(kopf.TemporaryError):
        await handlers.sync_handler(body=body, patch=patch, memo=memo, logger=LOG)
    status = patch["status"]
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        "Ready",
        "False",
        "AgentUnreachable",
    )
    assert status["failures"] == 1
    assert server.count("apply", "Secret") == 0
    body["status"] = dict(status)
    now = datetime.now(UTC)
    assert not handlers.due(body, now)  # within the 10 s back-off
    assert handlers.due(body, now + timedelta(seconds=11))
    assert handlers.backoff(2) == 20 and handlers.backoff(10) == 300


async def test_missing_credentials_secret_is_reported(
    server: RecordedApiServer, vault: Vault
) -> None:
    del server.objects[("Secret", "default", "production-vault-ca")]
    with pytest.raises(SyncError) as raised:
        await Run(server, vault, vault_secret()).once()
    assert raised.value.reason == "CredentialsMissing"
    assert "production-vault-ca" in raised.value.message and "caSecretRef" in raised.value.message
    assert vault.reads == []


async def test_missing_vault_agent_is_reported(server: RecordedApiServer, vault: Vault) -> None:
    with pytest.raises(SyncError) as raised:
        await Run(server, vault, vault_secret(vaultAgentRef={"name": "nope"})).once()
    assert raised.value.reason == "AgentNotFound" and "nope" in raised.value.message


async def test_a_secret_not_owned_is_never_overwritten(
    server: RecordedApiServer, vault: Vault
) -> None:
    server.put(_secret("shop-env", {"DATABASE_PASSWORD": "made by hand"}))
    with pytest.raises(SyncError) as raised:
        await Run(server, vault, vault_secret()).once()
    assert raised.value.reason == "TargetNotOwned"
    assert "spec.target.name" in raised.value.message
    assert vault.reads == []  # refused before reading anything from the agent
    assert server.count("apply", "Secret") == 0
    assert _decoded(server.stored("Secret", "shop-env")) == {"DATABASE_PASSWORD": "made by hand"}


async def test_a_type_change_is_refused_with_a_way_out(
    server: RecordedApiServer, vault: Vault
) -> None:
    body = vault_secret()
    run = Run(server, vault, body)
    await run.once()
    body["spec"]["type"] = "kubernetes.io/dockerconfigjson"
    body["spec"]["data"] = [{"key": ".dockerconfigjson", "secret": "shop/db/password"}]
    vault.values["shop/db/password"] = '{"auths": {}}'
    with pytest.raises(SyncError) as raised:
        await run.once()
    assert raised.value.reason == "TypeChanged" and "delete the Secret" in raised.value.message


async def test_bad_content_is_invalid_content_and_bad_spec_is_not_retried(
    server: RecordedApiServer, vault: Vault
) -> None:
    vault.values["registry/dockerconfig"] = "not json at all"
    body = vault_secret(
        type="kubernetes.io/dockerconfigjson",
        data=[{"key": ".dockerconfigjson", "secret": "registry/dockerconfig"}],
    )
    with pytest.raises(kopf.TemporaryError):
        await _handle(server, vault, body)
    patch = kopf.Patch()
    memo = kopf.Memo(api=server.api(), agent_login=StaticToken("kvt_x"), agent_reader=vault.read)
    bad = vault_secret(refreshInterval="5s")
    await handlers.sync_handler(body=bad, patch=patch, memo=memo, logger=LOG)  # no retry
    ready = patch["status"]["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "refreshInterval" in ready["message"]
    assert server.count("apply", "Secret") == 0
    bad["status"] = dict(patch["status"])
    assert not handlers.due(bad, datetime.now(UTC) + timedelta(days=1))


async def test_values_never_reach_status_logs_or_errors(
    server: RecordedApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    values = {
        "shop/db/password": "Sup3r-Secret-Db-Value",
        "shop/payments/api-key": "pk_live_Leak_Me",
    }
    vault = Vault()
    vault.values = dict(values)
    body = vault_secret(rollout={"enabled": True, "deployments": ["shop-web"]})
    caplog.set_level(logging.DEBUG)
    for change in ("Sup3r-Secret-Db-Value", "Rotated-Secret-Value-2"):
        vault.values["shop/db/password"] = change
        patch = await _handle(server, vault, body)
        body["status"] = dict(patch["status"])
    # bad content: the error names the secret, not the value
    vault.values["registry/dockerconfig"] = "{not-json Leaky-Docker-Value"
    docker = vault_secret(
        "registry",
        type="kubernetes.io/dockerconfigjson",
        data=[{"key": ".dockerconfigjson", "secret": "registry/dockerconfig"}],
    )
    patch = kopf.Patch()
    memo = kopf.Memo(api=server.api(), agent_login=StaticToken("kvt_x"), agent_reader=vault.read)
    with pytest.raises(kopf.TemporaryError) as raised:
        await handlers.sync_handler(body=docker, patch=patch, memo=memo, logger=LOG)
    shown = json.dumps([body["status"], dict(patch["status"]), str(raised.value)]) + caplog.text
    for value in [*values.values(), "Rotated-Secret-Value-2", "Leaky-Docker-Value"]:
        assert value not in shown
    assert "registry/dockerconfig" in str(raised.value)


async def test_the_operators_own_client_is_reused_for_the_sync_kinds(
    server: RecordedApiServer, vault: Vault
) -> None:
    """In the operator, ``memo.api`` is the VaultAgent handlers' HttpKubeApi; the VaultSecret
    handlers reach Secrets and Deployments through the same HTTP client."""
    operator_api = HttpKubeApi(server.api().client)
    memo = kopf.Memo(api=operator_api, agent_login=StaticToken("kvt_x"), agent_reader=vault.read)
    patch = kopf.Patch()
    await handlers.sync_handler(body=vault_secret(), patch=patch, memo=memo, logger=LOG)
    assert patch["status"]["conditions"][0]["status"] == "True"
    assert isinstance(memo.vaultsecret_api, SyncHttpKubeApi)
    assert memo.vaultsecret_api.client is operator_api.client
    assert server.count("apply", "Secret") == 1
