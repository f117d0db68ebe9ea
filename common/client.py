"""Python client for the agent API (httpx), sync and async, with mutual TLS and bearer tokens.

Workloads can import it::

    from common.client import AgentClient
    with AgentClient("https://vault:8080", token, ca_file="ca.crt",
                     cert_file="client.crt", key_file="client.key") as kv:
        password = kv.get("db/password")["value"]

Errors come back as the exceptions of :mod:`common.errors`, chosen by HTTP status, carrying the
agent's own message. Both clients share one request builder and one response reader; only the
transport differs.
"""

from __future__ import annotations

import json
import ssl
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from common import errors as e
from common.tls import client_context

_BY_STATUS: dict[int, type[e.KeyVaultError]] = {
    400: e.ValidationError,
    401: e.AuthenticationError,
    403: e.PermissionDeniedError,
    404: e.NotFoundError,
    409: e.ConflictError,
    413: e.PayloadTooLargeError,
    415: e.ValidationError,
    503: e.UnavailableError,
}


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    raw: bool = False


def _ref(ref: str) -> str:
    return quote(ref, safe="")


def error_from_response(status: int, body: Any, fallback: str) -> e.KeyVaultError:
    """The exception for an error response (the server's message, our class)."""
    err = body.get("error") if isinstance(body, dict) else None
    message = err.get("message") if isinstance(err, dict) else None
    cls = _BY_STATUS.get(status, e.KeyVaultError)
    exc = cls(message or fallback)
    if isinstance(err, dict) and isinstance(err.get("code"), str):
        exc.code = err["code"]
    if isinstance(err, dict) and isinstance(err.get("details"), dict):
        exc.details = err["details"]  # e.g. a form's errors by field
    exc.http_status = status
    return exc


def _read(resp: httpx.Response, call: _Call) -> Any:
    if resp.is_success:
        if call.raw:
            return resp.text
        try:
            return resp.json()
        except ValueError:
            raise e.UnavailableError(
                f"{resp.url.scheme}://{resp.url.netloc.decode()} answered {call.method} "
                f"{call.path} with something that is not JSON: is it a KeyVault agent's "
                "address? Check the URL and port (`keyvault agent run` prints them)"
            ) from None
    try:
        body = resp.json()
    except ValueError:
        body = None
    raise error_from_response(
        resp.status_code,
        body,
        f"the agent answered {resp.status_code} to {call.method} {call.path}",
    )


class _Api(ABC):
    """The agent API, one method per endpoint; subclasses say how a call is run.

    In :class:`AgentClient` each method returns the decoded body; in
    :class:`AsyncAgentClient` it returns an awaitable of it.
    """

    @abstractmethod
    def _run(self, call: _Call) -> Any:
        """Send one call and decode its answer."""

    def create(
        self, name: str, value: str, description: str = "", labels: dict[str, str] | None = None
    ) -> Any:
        body: dict[str, Any] = {"name": name, "value": value}
        if description:
            body["description"] = description
        if labels:
            body["labels"] = labels
        return self._run(_Call("POST", "/api/v1/secrets", json=body))

    def get(self, ref: str, version: int | None = None) -> Any:
        return self._run(
            _Call(
                "GET",
                f"/api/v1/secrets/{_ref(ref)}",
                params={"version": version} if version else None,
            )
        )

    def update(
        self,
        ref: str,
        value: str | None = None,
        description: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Any:
        body = {
            k: v
            for k, v in (("value", value), ("description", description), ("labels", labels))
            if v is not None
        }
        return self._run(_Call("PUT", f"/api/v1/secrets/{_ref(ref)}", json=body))

    def delete(self, ref: str) -> Any:
        return self._run(_Call("DELETE", f"/api/v1/secrets/{_ref(ref)}"))

    def undelete(self, ref: str) -> Any:
        return self._run(_Call("POST", f"/api/v1/secrets/{_ref(ref)}/undelete"))

    def destroy(self, ref: str) -> Any:
        return self._run(_Call("POST", f"/api/v1/secrets/{_ref(ref)}/destroy"))

    def rotate(self, ref: str, spec: dict[str, Any] | None = None) -> Any:
        return self._run(_Call("POST", f"/api/v1/secrets/{_ref(ref)}/rotate", json=spec or {}))

    def versions(self, ref: str) -> Any:
        return self._run(_Call("GET", f"/api/v1/secrets/{_ref(ref)}/versions"))

    def list(
        self, prefix: str = "", after: str | None = None, limit: int = 100, deleted: bool = False
    ) -> Any:
        params: dict[str, Any] = {"limit": limit}
        if prefix:
            params["prefix"] = prefix
        if after:
            params["after"] = after
        if deleted:
            params["deleted"] = "true"
        return self._run(_Call("GET", "/api/v1/secrets", params=params))

    def health(self) -> Any:
        return self._run(_Call("GET", "/api/v1/health"))

    def metrics(self) -> Any:
        return self._run(_Call("GET", "/api/v1/metrics", raw=True))

    def create_token(
        self, name: str, policy: Sequence[dict[str, Any]], ttl_seconds: int | None = None
    ) -> Any:
        body: dict[str, Any] = {"name": name, "policy": [dict(r) for r in policy]}
        if ttl_seconds:
            body["ttl_seconds"] = ttl_seconds
        return self._run(_Call("POST", "/api/v1/sys/tokens", json=body))

    def list_tokens(self) -> Any:
        return self._run(_Call("GET", "/api/v1/sys/tokens"))

    def revoke_token(self, token_id: str) -> Any:
        return self._run(_Call("DELETE", f"/api/v1/sys/tokens/{_ref(token_id)}"))

    def rotate_kek(self) -> Any:
        return self._run(_Call("POST", "/api/v1/sys/keys/rotate"))

    def rekey(
        self,
        new_key_file: str | None = None,
        new_passphrase: str | None = None,
        iterations: int | None = None,
    ) -> Any:
        body: dict[str, Any] = {}
        if new_key_file:
            body["new_key_file"] = new_key_file
        if new_passphrase:
            body["new_passphrase"] = new_passphrase
        if iterations:
            body["iterations"] = iterations
        return self._run(_Call("POST", "/api/v1/sys/keys/rekey", json=body))

    def keys(self) -> Any:
        return self._run(_Call("GET", "/api/v1/sys/keys"))

    def job(self, job_id: str) -> Any:
        return self._run(_Call("GET", f"/api/v1/sys/jobs/{_ref(job_id)}"))

    def jwt_login(self, role: str, token: str) -> Any:
        """Trade a workload's JWT for a short-lived agent token (no bearer token needed)."""
        return self._run(_Call("POST", "/api/v1/auth/jwt", json={"role": role, "jwt": token}))


# The agent API's calls for a caller that brings its own transport (the Kubernetes operator runs
# them over its bounded mutual-TLS requests): subclass ``AgentApi`` and define ``_run(ApiCall)``.
AgentApi = _Api
ApiCall = _Call


STREAM_READ_TIMEOUT = 45.0  # the agent sends a heartbeat every 15 s


class EventParser:
    """Server-Sent Events of the change stream, fed line by line: each complete event's JSON.

    Comment lines (heartbeats) are skipped; an ``end`` event (the token expired or was
    revoked) sets :attr:`ended`.
    """

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.ended = False

    def feed(self, line: str) -> dict[str, Any] | None:
        """One line (without its newline); the event it completes, if any."""
        if line.startswith(":"):
            return None
        if line:
            field_, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field_ == "event":
                self._event = value
            elif field_ == "data":
                self._data.append(value)
            return None
        event, data = self._event, "\n".join(self._data)
        self._event, self._data = "", []
        if not data:
            return None
        if event == "end":
            self.ended = True
            return None
        doc = json.loads(data)
        return doc if isinstance(doc, dict) else None


def _changes_params(names: Sequence[str] | None) -> dict[str, str] | None:
    return {"names": ",".join(names)} if names else None


def _stream_error(resp: httpx.Response, body: bytes) -> e.KeyVaultError:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    return error_from_response(resp.status_code, doc, f"the agent answered {resp.status_code}")


@dataclass
class ClientConfig:
    """Where the agent is and how to prove who we are."""

    url: str
    token: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    timeout: float = 10.0

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS context (TLS 1.3, our CA, our client certificate) for https URLs."""
        if not self.url.startswith("https"):
            return False
        return client_context(self.ca_file, cert_file=self.cert_file, key_file=self.key_file)

    def headers(self) -> dict[str, str]:
        """Request headers, with the bearer token when there is one."""
        headers = {"User-Agent": "keyvault-client/0.1"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers


CERT_HINT = (
    "the agent probably requires a client certificate (mutual TLS): give --cert and --key "
    "(KEYVAULT_CLIENT_CERT, KEYVAULT_CLIENT_KEY) or --data-dir of the agent's folder"
)


def connection_hint(cfg: ClientConfig, exc: Exception) -> str:
    """What to do about a failed connection to an agent ('' when there is nothing to say)."""
    reason = str(exc)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "the URL must start with https:// (e.g. https://127.0.0.1:8080)"
    if cfg.url.startswith("http://") and isinstance(exc, httpx.RemoteProtocolError):
        return "the agent speaks HTTPS: use " + "https://" + cfg.url.removeprefix("http://")
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        if "match" in reason or "mismatch" in reason:
            return "use the host name in the agent's certificate (agent init --hostname adds one)"
        return (
            "pass the CA that signed the agent's certificate with --ca-file (KEYVAULT_CA_FILE), "
            "e.g. <data-dir>/tls/ca.crt, or use --data-dir on the agent's host"
        )
    no_cert = cfg.url.startswith("https") and cfg.cert_file is None
    refused = "CERTIFICATE_REQUIRED" in reason.upper() or isinstance(
        exc, httpx.ReadError | httpx.RemoteProtocolError
    )
    if no_cert and refused:
        return CERT_HINT
    if isinstance(exc, httpx.ConnectError) and "refused" in reason.lower():
        return "is the agent running? start it with `keyvault agent run --data-dir DIR`"
    if isinstance(exc, httpx.TimeoutException):
        return "check the address and that no firewall drops the connection"
    return ""


def _unreachable(cfg: ClientConfig, exc: Exception) -> e.UnavailableError:
    reason = (str(exc) or type(exc).__name__).rstrip(".")
    hint = connection_hint(cfg, exc)
    return e.UnavailableError(
        f"cannot reach the agent at {cfg.url}: {reason}" + (f"; {hint}" if hint else "")
    )


class AgentClient(_Api):
    """Blocking client."""

    def __init__(self, url: str, token: str | None = None, **kw: Any) -> None:
        self.config = ClientConfig(url.rstrip("/"), token, **kw)
        self._http = httpx.Client(
            base_url=self.config.url,
            verify=self.config.ssl_context(),
            headers=self.config.headers(),
            timeout=self.config.timeout,
        )

    def __repr__(self) -> str:
        return f"AgentClient(url={self.config.url!r})"

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close connections."""
        self._http.close()

    def _run(self, call: _Call) -> Any:
        try:
            resp = self._http.request(call.method, call.path, params=call.params, json=call.json)
        except httpx.TransportError as exc:
            raise _unreachable(self.config, exc) from None
        return _read(resp, call)

    def changes(
        self, names: Sequence[str] | None = None, *, on_open: Callable[[], None] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Follow the change stream: ``{"name", "id", "version", "event"}`` per change to a
        secret the token may read (``event`` ``resync``: re-read everything you follow). Ends
        when the agent ends the stream; a dropped connection raises UnavailableError.

        ``on_open`` is called once the agent has accepted the stream: every change committed
        after that call is delivered (re-read what you follow then, to miss nothing)."""
        timeout = httpx.Timeout(self.config.timeout, read=STREAM_READ_TIMEOUT)
        parser = EventParser()
        try:
            with self._http.stream(
                "GET", "/api/v1/changes", params=_changes_params(names), timeout=timeout
            ) as resp:
                if not resp.is_success:
                    raise _stream_error(resp, resp.read())
                if on_open is not None:
                    on_open()
                for line in resp.iter_lines():
                    doc = parser.feed(line)
                    if doc is not None:
                        yield doc
                    if parser.ended:
                        return
        except httpx.TransportError as exc:
            raise _unreachable(self.config, exc) from None


class AsyncAgentClient(_Api):
    """Asyncio client: the same methods as :class:`AgentClient`, awaitable."""

    def __init__(self, url: str, token: str | None = None, **kw: Any) -> None:
        self.config = ClientConfig(url.rstrip("/"), token, **kw)
        self._http = httpx.AsyncClient(
            base_url=self.config.url,
            verify=self.config.ssl_context(),
            headers=self.config.headers(),
            timeout=self.config.timeout,
        )

    def __repr__(self) -> str:
        return f"AsyncAgentClient(url={self.config.url!r})"

    async def __aenter__(self) -> AsyncAgentClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close connections."""
        await self._http.aclose()

    async def _run(self, call: _Call) -> Any:
        try:
            resp = await self._http.request(
                call.method, call.path, params=call.params, json=call.json
            )
        except httpx.TransportError as exc:
            raise _unreachable(self.config, exc) from None
        return _read(resp, call)

    async def changes(
        self, names: Sequence[str] | None = None, *, on_open: Callable[[], None] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Follow the change stream (as :meth:`AgentClient.changes`, asynchronously)."""
        timeout = httpx.Timeout(self.config.timeout, read=STREAM_READ_TIMEOUT)
        parser = EventParser()
        try:
            async with self._http.stream(
                "GET", "/api/v1/changes", params=_changes_params(names), timeout=timeout
            ) as resp:
                if not resp.is_success:
                    raise _stream_error(resp, await resp.aread())
                if on_open is not None:
                    on_open()
                async for line in resp.aiter_lines():
                    doc = parser.feed(line)
                    if doc is not None:
                        yield doc
                    if parser.ended:
                        return
        except httpx.TransportError as exc:
            raise _unreachable(self.config, exc) from None
