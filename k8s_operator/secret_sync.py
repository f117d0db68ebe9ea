"""Sync one ``VaultSecret``: log in to the agent, read its secrets, apply the Secret, restart.

The steps, in order, each one able to stop the sync with a :class:`SyncError` that leaves the
existing Secret untouched:

1. resolve the agent: its URL (given, or the Service of a VaultAgent in the namespace), the CA
   that signed its certificate and the client certificate its mutual TLS asks for, both from
   Secrets in the namespace;
2. log in (:class:`JwtLogin`: the pod's service-account token traded at ``POST
   /api/v1/auth/jwt`` for an agent token, reused until 30 s before it expires) and read every
   listed secret with ``GET /api/v1/secrets/{name}``; answers are bounded in size and time;
3. render the Secret for its type, hash its content (keyed, see
   :func:`k8s_operator.vaultsecret.content_hash`) and server-side apply it only when the hash
   differs from the one on the stored Secret;
4. when the content changed and ``rollout.enabled``: restart the Deployments that use the
   Secret, ``batchSize`` at a time, each batch after the previous one has rolled out, and each
   Deployment at most once per ``minInterval``; those not restarted yet stay in
   ``status.pendingRestarts`` and are taken up by the next sync, so a restart is never lost
   and never repeated for the same content.

Values exist only in memory between the read and the apply: never in a log, an exception,
the status or an event.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from common.client import AgentApi, ApiCall, error_from_response
from common.errors import ConfigError, KeyVaultError
from common.tls import client_context
from k8s_operator import MANAGER
from k8s_operator.api import HttpKubeApi, KubeApi, KubeApiError
from k8s_operator.vaultsecret import (
    HASH_ANNOTATION,
    RESTARTED_AT,
    RESTARTED_FOR,
    SALT_ANNOTATION,
    AgentSpec,
    VaultSecretSpec,
    batches,
    build_secret,
    content_hash,
    parse_spec,
    render_data,
    restart_marker,
    uses_secret,
)

SA_TOKEN_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
CHANGES_PATH = "/api/v1/changes"
MAX_EVENT = 64 << 10  # bytes of one change event
STREAM_IDLE = 900.0  # seconds without a byte before the stream is reopened
MAX_BODY = 1 << 20  # bytes of one agent answer
AGENT_TIMEOUT = 10.0  # seconds for one agent request
TOKEN_MARGIN = timedelta(seconds=30)
ROLLOUT_TIMEOUT = 600.0  # seconds to wait for one batch to roll out
ROLLOUT_POLL = 5.0
DEFAULT_AGENT_PORT = 8080
Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


def utcnow() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """A Kubernetes timestamp (RFC 3339, seconds, UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any) -> datetime | None:
    """A timestamp written by :func:`iso` (or any ISO 8601 with a zone); None if unreadable."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class SyncError(KeyVaultError):
    """A sync that could not finish; ``reason`` is the Ready condition's reason."""

    code = "sync_failed"
    http_status = 502

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SyncKubeApi(KubeApi, Protocol):
    """The Kubernetes calls a sync makes: those of the VaultAgent handlers, plus a list."""

    async def list(
        self, kind: str, namespace: str, selector: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace`` whose labels match ``selector``."""
        ...


# kind → (API prefix, plural) of what a sync touches; the VaultAgent handlers' API has none
SYNC_PATHS = {
    "Secret": ("api/v1", "secrets"),
    "Deployment": ("apis/apps/v1", "deployments"),
    "VaultAgent": ("apis/keyvault.io/v1", "vaultagents"),
}


class SyncHttpKubeApi(HttpKubeApi):
    """:class:`HttpKubeApi` for the kinds a VaultSecret sync touches, plus a list call.

    It shares the operator's HTTP client (server URL, CA, credentials).
    """

    @staticmethod
    def _path(kind: str, namespace: str, name: str = "") -> str:
        if kind not in SYNC_PATHS:
            raise KubeApiError(f"a VaultSecret sync does not touch objects of kind {kind}")
        prefix, plural = SYNC_PATHS[kind]
        return f"/{prefix}/namespaces/{namespace}/{plural}" + (f"/{name}" if name else "")

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as field manager ``keyvault-operator`` (conflicts forced)."""
        meta = obj["metadata"]
        path = self._path(obj["kind"], meta["namespace"], meta["name"])
        params = {"fieldManager": MANAGER, "force": "true"}
        headers = {"Content-Type": "application/apply-patch+yaml"}
        result = await self._call(
            "PATCH", path, params=params, headers=headers, content=json.dumps(obj)
        )
        if result is None:
            raise KubeApiError(f"apply of {obj['kind']} {meta['name']} found no such resource")
        return result

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """GET one object; None when it does not exist."""
        return await self._call("GET", self._path(kind, namespace, name))

    async def patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """JSON merge patch of one object; None when it does not exist."""
        headers = {"Content-Type": "application/merge-patch+json"}
        path = self._path(kind, namespace, name)
        return await self._call("PATCH", path, headers=headers, content=json.dumps(patch))

    async def list(
        self, kind: str, namespace: str, selector: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """The objects of one kind in a namespace whose labels match ``selector``."""
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        params = {"labelSelector": labels, "limit": 500}
        result = await self._call("GET", self._path(kind, namespace), params=params)
        return list((result or {}).get("items") or [])


@dataclass(frozen=True)
class AgentConnection:
    """Where the agent is and the PEM material of its mutual TLS (never shown in a repr)."""

    url: str
    ca_pem: str = field(repr=False)
    cert_pem: str = field(repr=False)
    key_pem: str = field(repr=False)


class Login(Protocol):
    """Gets an agent token for a role, over a client already connected to the agent."""

    async def token(self, client: httpx.AsyncClient, url: str, role: str) -> str:
        """A bearer token for ``role`` on the agent at ``url``."""
        ...

    def forget(self, url: str, role: str) -> None:
        """Drop a cached token the agent refused."""
        ...


class StaticToken:
    """A fixed agent token (tests, or an agent without the JWT login)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticToken(<hidden>)"

    async def token(self, client: httpx.AsyncClient, url: str, role: str) -> str:
        """The fixed token."""
        return self._token

    def forget(self, url: str, role: str) -> None:
        """Nothing to forget."""


class JwtLogin:
    """The JWT login: the service-account token traded for a short-lived agent token.

    The call is :meth:`common.client.AsyncAgentClient.jwt_login`'s (through
    :class:`OperatorAgentApi`). Tokens are cached per (agent URL, role) and reused until 30 s
    before their ``expires_at``.
    """

    def __init__(self, token_path: Path = SA_TOKEN_PATH, clock: Clock = utcnow) -> None:
        self.token_path = token_path
        self.clock = clock
        self._cache: dict[tuple[str, str], tuple[str, datetime]] = {}

    def __repr__(self) -> str:
        return f"JwtLogin(token_path={str(self.token_path)!r}, cached={len(self._cache)})"

    def forget(self, url: str, role: str) -> None:
        """Drop the cached token of (url, role)."""
        self._cache.pop((url, role), None)

    async def token(self, client: httpx.AsyncClient, url: str, role: str) -> str:
        """A cached agent token, or a new one from ``POST /api/v1/auth/jwt``."""
        cached = self._cache.get((url, role))
        if cached is not None and self.clock() < cached[1] - TOKEN_MARGIN:
            return cached[0]
        try:
            jwt = self.token_path.read_text().strip()
        except OSError as exc:
            raise SyncError(
                "LoginFailed",
                f"cannot read the service-account token at {self.token_path} "
                f"({type(exc).__name__}); mount a projected token there",
            ) from None
        try:
            body = await OperatorAgentApi(client, url).jwt_login(role, jwt)
        except SyncError:
            raise
        except KeyVaultError as exc:
            raise refusal(
                exc.http_status, exc.message, f"the agent refused the login for role {role!r}"
            ) from None
        token = body.get("token") if isinstance(body, dict) else None
        expires = parse_time(body.get("expires_at")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or expires is None:
            raise SyncError(
                "LoginFailed",
                "the agent's login answer has no token or no readable expires_at",
            )
        self._cache[(url, role)] = (token, expires)
        return token


class OperatorAgentApi(AgentApi):
    """The agent API's calls as :mod:`common.client` defines them (one definition of each
    endpoint), run over the operator's own client with :func:`request_json` (answers bounded
    at 1 MiB and 10 s per call, connection errors named for the VaultSecret fields)."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self._client = client
        self._url = url

    def __repr__(self) -> str:
        return f"OperatorAgentApi(url={self._url!r})"

    async def _run(self, call: ApiCall) -> Any:
        status, body = await request_json(
            self._client, call.method, call.path, self._url, json_body=call.json, params=call.params
        )
        if not 200 <= status < 300:
            fallback = f"the agent answered {status} to {call.method} {call.path}"
            raise error_from_response(status, body, fallback)
        return body


@contextlib.asynccontextmanager
async def agent_client(conn: AgentConnection) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client to the agent: TLS 1.3, the agent's CA, our client certificate.

    The certificate and key are written for ``ssl`` to load into a private temporary folder
    (mode 0700) and removed as soon as they are loaded.
    """
    with tempfile.TemporaryDirectory(prefix="kv-op-") as folder:
        cert, key = Path(folder, "client.crt"), Path(folder, "client.key")
        for path, text in ((cert, conn.cert_pem), (key, conn.key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(text)
        try:
            ctx = client_context(ca_pem=conn.ca_pem, cert_file=cert, key_file=key)
        except ConfigError as exc:
            raise SyncError("BadCredentials", exc.message.replace(folder, "<secret>")) from None
    async with httpx.AsyncClient(
        base_url=conn.url,
        verify=ctx,
        timeout=AGENT_TIMEOUT,
        headers={"User-Agent": "keyvault-operator"},
    ) as client:
        yield client


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    url: str,
    *,
    token: str | None = None,
    json_body: Any = None,
    params: Mapping[str, Any] | None = None,
) -> tuple[int, Any]:
    """One call to the agent: (status, decoded JSON or None); the body is cut at 1 MiB."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with client.stream(
            method, path, json=json_body, headers=headers, params=params
        ) as resp:
            chunks, size = [], 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY:
                    raise SyncError(
                        "AgentError", f"the agent's answer to {method} {path} is over 1 MiB"
                    )
                chunks.append(chunk)
            status = resp.status_code
    except httpx.TransportError as exc:
        hint = ""
        if isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError):
            hint = "; the agent may have refused the client certificate (clientCertSecretRef)"
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            hint = "; the agent's certificate is not signed by the CA in caSecretRef"
        raise SyncError(
            "AgentUnreachable", f"cannot reach the agent at {url}: {type(exc).__name__}{hint}"
        ) from None
    try:
        return status, json.loads(b"".join(chunks) or b"null")
    except ValueError:
        return status, None


async def follow_changes(
    client: httpx.AsyncClient,
    url: str,
    token: str,
    names: set[str],
    on_change: Callable[[str], None],
) -> None:
    """Follow the agent's change stream (``GET /api/v1/changes``, server-sent events) until it
    ends; ``on_change(name)`` for each event about one of ``names``.

    Events carry ``{"name", "id", "version", "event"}`` (never a value); anything else is
    skipped. One event may hold 64 KiB; a stream silent for 15 minutes is given up (the
    caller reopens it). A refused stream is a SyncError (``NoChangeStream`` for a 404).
    """
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    timeout = httpx.Timeout(AGENT_TIMEOUT, read=STREAM_IDLE)
    try:
        async with client.stream("GET", CHANGES_PATH, headers=headers, timeout=timeout) as resp:
            if resp.status_code != 200:
                body = await resp.aread()
                try:
                    doc = json.loads(body[:MAX_EVENT])
                except ValueError:
                    doc = None
                error = answer_error(resp.status_code, doc, "the agent refused its change stream")
                if resp.status_code == 404:
                    error.reason = "NoChangeStream"
                raise error
            pending = b""
            async for chunk in resp.aiter_bytes():
                pending = (pending + chunk).replace(b"\r\n", b"\n")
                while b"\n\n" in pending:
                    raw, pending = pending.split(b"\n\n", 1)
                    name = _event_name(raw)
                    if name is not None and name in names:
                        on_change(name)
                if len(pending) > MAX_EVENT:
                    raise SyncError("AgentError", "a change event from the agent is over 64 KiB")
    except httpx.TransportError as exc:
        raise SyncError(
            "AgentUnreachable", f"the change stream of {url} broke: {type(exc).__name__}"
        ) from None


def _event_name(raw: bytes) -> str | None:
    """The secret name of one server-sent event, or None when it is not a change event."""
    lines = raw.decode("utf-8", "replace").split("\n")
    data = "\n".join(line[5:].removeprefix(" ") for line in lines if line.startswith("data:"))
    try:
        doc = json.loads(data) if data else None
    except ValueError:
        return None
    name = doc.get("name") if isinstance(doc, dict) else None
    return name if isinstance(name, str) else None


def answer_error(status: int, body: Any, what: str) -> SyncError:
    """The SyncError for an agent's error answer; its message is the agent's, cut to 200."""
    err = body.get("error") if isinstance(body, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    return refusal(status, message if isinstance(message, str) else "", what)


def refusal(status: int, message: str, what: str) -> SyncError:
    """The SyncError for an agent's refusal with ``status`` and its ``message`` (cut to 200)."""
    detail = f": {message[:200]}" if message else ""
    reason = {401: "Unauthorized", 403: "Forbidden", 404: "SecretNotFound"}.get(
        status, "AgentError"
    )
    return SyncError(reason, f"{what} ({status}{detail})")


async def read_values(
    conn: AgentConnection, role: str, names: Sequence[str], login: Login
) -> dict[str, str]:
    """The current value of each named secret, read over mutual TLS with a login token."""
    values: dict[str, str] = {}
    async with agent_client(conn) as client:
        token = await login.token(client, conn.url, role)
        for name in dict.fromkeys(names):
            path = f"/api/v1/secrets/{quote(name, safe='')}"
            status, body = await request_json(client, "GET", path, conn.url, token=token)
            if status == 401:
                login.forget(conn.url, role)
            if status != 200:
                raise answer_error(status, body, f"cannot read the KeyVault secret {name!r}")
            value = body.get("value") if isinstance(body, dict) else None
            if not isinstance(value, str):
                raise SyncError("AgentError", f"the agent's answer for {name!r} has no value")
            values[name] = value
    return values


Reader = Callable[[AgentConnection, str, Sequence[str], Login], Awaitable[dict[str, str]]]


async def resolve_connection(api: KubeApi, namespace: str, spec: AgentSpec) -> AgentConnection:
    """The agent URL and TLS material, from the spec and Secrets in the namespace."""
    url = spec.url
    if url is None:
        agent = await api.get("VaultAgent", namespace, str(spec.vault_agent))
        if agent is None:
            raise SyncError(
                "AgentNotFound",
                f"no VaultAgent {spec.vault_agent!r} in namespace {namespace} (spec.vaultAgentRef)",
            )
        port = (agent.get("spec") or {}).get("port", DEFAULT_AGENT_PORT)
        if not isinstance(port, int) or isinstance(port, bool):
            raise SyncError("AgentNotFound", f"VaultAgent {spec.vault_agent!r} has no valid port")
        url = f"https://{spec.vault_agent}.{namespace}.svc:{port}"
    ca = await _secret_data(api, namespace, spec.ca.name, "spec.agent.caSecretRef")
    tls = await _secret_data(
        api, namespace, spec.client_cert_secret, "spec.agent.clientCertSecretRef"
    )
    for secret, data, key in (
        (spec.ca.name, ca, spec.ca.key),
        (spec.client_cert_secret, tls, "tls.crt"),
        (spec.client_cert_secret, tls, "tls.key"),
    ):
        if key not in data:
            raise SyncError("CredentialsMissing", f"Secret {secret} has no key {key}")
    return AgentConnection(url, ca[spec.ca.key], tls["tls.crt"], tls["tls.key"])


async def _secret_data(api: KubeApi, namespace: str, name: str, field: str) -> dict[str, str]:
    secret = await api.get("Secret", namespace, name)
    if secret is None:
        raise SyncError(
            "CredentialsMissing", f"Secret {name} named by {field} does not exist in {namespace}"
        )
    try:
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    except (binascii.Error, UnicodeDecodeError):
        raise SyncError(
            "CredentialsMissing", f"Secret {name} holds data that is not PEM text"
        ) from None


def condition(
    kind: str,
    ok: bool,
    reason: str,
    message: str,
    now: datetime,
    previous: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """One status condition; keeps ``lastTransitionTime`` while the status does not change."""
    status = "True" if ok else "False"
    since = iso(now)
    for old in previous:
        if old.get("type") == kind and old.get("status") == status:
            since = str(old.get("lastTransitionTime") or since)
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }


def failed_status(
    body: Mapping[str, Any], reason: str, message: str, now: datetime
) -> dict[str, Any]:
    """The status after a failed sync: Ready=False with the reason; the hash is kept."""
    previous = (body.get("status") or {}).get("conditions") or []
    return {
        "observedGeneration": int(body["metadata"].get("generation") or 1),
        "message": message,
        "conditions": [condition("Ready", False, reason, message, now, previous)],
    }


@dataclass
class SyncOutcome:
    """What one sync did (the handler logs it) and the status to write."""

    status: dict[str, Any]
    applied: bool
    restarted: list[str]


async def sync(
    api: SyncKubeApi,
    body: Mapping[str, Any],
    login: Login,
    *,
    clock: Clock = utcnow,
    sleep: Sleep = asyncio.sleep,
    reader: Reader | None = None,
) -> SyncOutcome:
    """Sync one VaultSecret; raises InvalidVaultSecretError (spec or content) or SyncError."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = parse_spec(name, body.get("spec") or {})
    existing = await api.get("Secret", namespace, spec.target)
    salt = _check_target(existing, body, spec)  # before reading anything it could not write
    conn = await resolve_connection(api, namespace, spec.agent)
    read = reader or read_values
    values = await read(conn, spec.agent.role, [i.secret for i in spec.items], login)
    data = render_data(spec, values)
    digest = content_hash(salt, spec.type, data)
    old_digest = ((existing or {}).get("metadata", {}).get("annotations") or {}).get(
        HASH_ANNOTATION
    )
    applied = digest != old_digest
    if applied:
        await api.apply(build_secret(body, spec, data, salt, digest))
    del values, data
    status = dict(body.get("status") or {})
    pending = list(status.get("pendingRestarts") or [])
    if applied and existing is not None and spec.rollout.enabled:
        pending = list(dict.fromkeys([*pending, *await _users(api, namespace, spec)]))
    if not spec.rollout.enabled:
        pending = []
    restarted: list[str] = []
    if pending:
        restarted, pending = await rollout(api, namespace, spec, pending, digest, clock, sleep)
    now = clock()
    message = f"{len(spec.items)} key(s) synced into Secret {spec.target}"
    if restarted:
        message += f"; restarted {', '.join(restarted)}"
    if pending:
        message += f"; restart pending for {', '.join(pending)}"
    previous = status.get("conditions") or []
    result = {
        "observedGeneration": int(meta.get("generation") or 1),
        "syncedVersionHash": digest,
        "lastSyncTime": iso(now),
        "message": message,
        "pendingRestarts": pending,
        "conditions": [
            condition("Ready", True, "Synced", message, now, previous),
            condition(
                "RolloutPending",
                bool(pending),
                "Waiting" if pending else "NothingPending",
                f"restart pending for {', '.join(pending)}" if pending else "no restart pending",
                now,
                previous,
            ),
        ],
    }
    if restarted:
        result["lastRolloutTime"] = iso(now)
    return SyncOutcome(result, applied, restarted)


def _check_target(
    existing: Mapping[str, Any] | None, body: Mapping[str, Any], spec: VaultSecretSpec
) -> str:
    """The hash salt to use; refuses a Secret this VaultSecret does not own or of another type."""
    if existing is None:
        return secrets.token_hex(16)
    meta = existing.get("metadata") or {}
    owners = [r.get("uid") for r in meta.get("ownerReferences") or [] if r.get("controller")]
    if owners != [body["metadata"]["uid"]]:
        raise SyncError(
            "TargetNotOwned",
            f"Secret {spec.target} already exists and is not managed by this VaultSecret; "
            "delete it or set spec.target.name to another name",
        )
    if existing.get("type", "Opaque") != spec.type:
        raise SyncError(
            "TypeChanged",
            f"Secret {spec.target} has type {existing.get('type')} and a Secret's type cannot "
            f"change; delete the Secret and the operator recreates it as {spec.type}",
        )
    salt = (meta.get("annotations") or {}).get(SALT_ANNOTATION)
    return salt if isinstance(salt, str) and salt else secrets.token_hex(16)


async def _users(api: SyncKubeApi, namespace: str, spec: VaultSecretSpec) -> list[str]:
    """The Deployments to restart: the named ones, or those the selector matches that use it."""
    if spec.rollout.deployments:
        return list(spec.rollout.deployments)
    found = await api.list("Deployment", namespace, spec.rollout.selector or {})
    return sorted(d["metadata"]["name"] for d in found if uses_secret(d, spec.target))


def rolled_out(deployment: Mapping[str, Any]) -> bool:
    """Whether a Deployment's latest template runs on all its replicas."""
    status = deployment.get("status") or {}
    wanted = int((deployment.get("spec") or {}).get("replicas", 1))
    generation = int(deployment["metadata"].get("generation") or 0)
    return (
        int(status.get("observedGeneration") or 0) >= generation
        and int(status.get("updatedReplicas") or 0) >= wanted
        and int(status.get("availableReplicas") or 0) >= wanted
    )


async def rollout(
    api: KubeApi,
    namespace: str,
    spec: VaultSecretSpec,
    pending: list[str],
    digest: str,
    clock: Clock,
    sleep: Sleep,
) -> tuple[list[str], list[str]]:
    """Restart the due Deployments batch by batch; returns (restarted, still pending).

    A Deployment restarted less than ``minInterval`` ago (its template's
    ``keyvault.io/restartedAt``) stays pending; a missing one, or one already restarted for
    this content (``keyvault.io/restartedFor``, even if a stale status still lists it), is
    dropped. Each batch waits for the previous one to roll out; if it does not within 10
    minutes, the rest stay pending.
    """
    marker = restart_marker(spec.target, digest)
    due: list[str] = []
    later: list[str] = []
    for name in pending:
        deployment = await api.get("Deployment", namespace, name)
        if deployment is None:
            continue
        annotations = (
            deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations")
            or {}
        )
        if annotations.get(RESTARTED_FOR) == marker:
            continue
        last = parse_time(annotations.get(RESTARTED_AT))
        if last is not None and clock() - last < timedelta(seconds=spec.rollout.min_interval):
            later.append(name)
        else:
            due.append(name)
    restarted: list[str] = []
    groups = batches(due, spec.rollout.batch_size)
    for index, batch in enumerate(groups):
        stamp = iso(clock())
        annotations = {RESTARTED_AT: stamp, RESTARTED_FOR: marker}
        patch = {"spec": {"template": {"metadata": {"annotations": annotations}}}}
        for name in batch:
            if await api.patch("Deployment", namespace, name, patch) is not None:
                restarted.append(name)
        if index + 1 < len(groups) and not await _wait_rolled_out(api, namespace, batch, sleep):
            rest = [n for g in groups[index + 1 :] for n in g]
            return restarted, [*rest, *later]
    return restarted, later


async def _wait_rolled_out(api: KubeApi, namespace: str, names: list[str], sleep: Sleep) -> bool:
    """Poll until every Deployment in ``names`` has rolled out (False after the timeout)."""
    waited = 0.0
    while waited < ROLLOUT_TIMEOUT:
        states = [await api.get("Deployment", namespace, n) for n in names]
        if all(s is None or rolled_out(s) for s in states):
            return True
        await sleep(ROLLOUT_POLL)
        waited += ROLLOUT_POLL
    return False
