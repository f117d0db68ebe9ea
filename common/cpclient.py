"""Python client for the control plane's operator API (httpx), sync and async.

The operator apps (CLI, TUI, desktop) use it to log in and manage the fleet::

    from common.cpclient import ControlPlaneClient
    with ControlPlaneClient("https://cp.example.com") as cp:
        cp.login("ops@example.com", password)       # keeps the kvs_… token for later calls
        for vault in cp.iter_vaults():
            print(vault["id"], vault["status"])

Errors come back as the exceptions of :mod:`common.errors`, chosen by HTTP status, carrying the
control plane's own message (its ``{"error": {"code", "message"}}`` body). Both clients share one
request builder and one response reader; only the transport differs. The session token is never
part of a ``repr`` or an error message.
"""

from __future__ import annotations

import ipaddress
import ssl
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from common import errors as e
from common.client import error_from_response
from common.pinning import pinned_context

COMMANDS = ("rotate", "resync")
COMMAND_DONE = ("succeeded", "failed")
USER_AGENT = "keyvault-operator/0.1"


class TooManyAttemptsError(e.UnavailableError):
    """The control plane locked the account for a while after failed logins (HTTP 429)."""

    code = "too_many_attempts"
    http_status = 429


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = field(default=None, repr=False)  # may hold a password
    raw: bool = False
    # a login's answer carries the token the client keeps for the following calls
    keeps_token: bool = False
    # the answer's field to return instead of the whole body (e.g. ``items`` of a listing)
    unwrap: str | None = None


def _ref(ref: str) -> str:
    return quote(ref, safe="")


def _params(**values: Any) -> dict[str, Any] | None:
    kept = {k: v for k, v in values.items() if v is not None}
    return kept or None


def _read(resp: httpx.Response, call: _Call) -> Any:
    if resp.is_success:
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.text if call.raw else resp.json()
    try:
        body = resp.json()
    except ValueError:
        body = None
    exc = error_from_response(
        resp.status_code,
        body,
        f"the control plane answered {resp.status_code} to {call.method} {call.path}",
    )
    if resp.status_code == 429:
        retry = resp.headers.get("Retry-After")
        message = exc.message
        if retry and retry.isdigit() and "try again" not in message:
            message += f" (try again in {retry} s)"
        limited = TooManyAttemptsError(message)
        limited.code = exc.code if exc.code != "error" else limited.code
        raise limited
    raise exc


def tls_context(ca_file: Path | str | None = None) -> ssl.SSLContext:
    """A client context that verifies the control plane: ``ca_file`` if given, else system CAs."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        path = Path(ca_file)
        try:
            ctx.load_verify_locations(cafile=str(path))
        except FileNotFoundError:
            raise e.ConfigError(f"CA file {path} does not exist; check --ca-file") from None
        except (ssl.SSLError, OSError, ValueError):
            raise e.ConfigError(
                f"CA file {path} does not hold a PEM certificate; check --ca-file"
            ) from None
    return ctx


def _verify(
    url: str,
    ca_file: Path | str | None,
    ssl_context: ssl.SSLContext | None,
    pin: str | None = None,
) -> Any:
    if not url.startswith("https://"):
        return False  # plain http, which check_url allows only to loopback
    if ssl_context is not None:
        return ssl_context
    if pin:
        if ca_file is not None:
            raise e.ValidationError("give the control plane's CA file or its pin, not both")
        return pinned_context(pin)
    return tls_context(ca_file)


def client_tls(
    url: str, ca_file: Path | str | None = None, pin: str | None = None
) -> ssl.SSLContext | None:
    """The TLS context for a control-plane URL (None for loopback ``http://``), for other
    transports than the API client (the operator stream): the same rules as the client."""
    verify = _verify(check_url(url), ca_file, None, pin)
    return verify if isinstance(verify, ssl.SSLContext) else None


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1): this machine only."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """A control-plane URL, cleaned; plain ``http://`` only to this machine (one-line error)."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url) if url.startswith(("http://", "https://")) else None
    if parts is None or not parts.hostname:
        raise e.ValidationError(
            f"control-plane URL {url!r} must start with https:// (http:// only to localhost)"
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise e.ValidationError(
            f"refusing {url}: plain http:// would send your password and session token in "
            "clear across the network; use https:// (plain http:// only to localhost)"
        )
    return url


def _unreachable(url: str, exc: Exception) -> e.UnavailableError:
    reason = str(exc) or type(exc).__name__
    hint = ""
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        hint = "; pass the CA that signed its certificate with --ca-file"
    return e.UnavailableError(f"cannot reach the control plane at {url}: {reason}{hint}")


class _Api(ABC):
    """The operator API, one method per endpoint; subclasses say how a call is run.

    In :class:`ControlPlaneClient` each method returns the decoded body; in
    :class:`AsyncControlPlaneClient` it returns an awaitable of it.
    """

    @abstractmethod
    def _run(self, call: _Call) -> Any:
        """Send one call and decode its answer."""

    # ------------------------------------------------------------ accounts
    def login(self, email: str, password: str) -> Any:
        """Log in; the client keeps the returned session token for the calls that follow."""
        body = {"email": email, "password": password}
        return self._run(_Call("POST", "/api/v1/auth/login", json=body, keeps_token=True))

    def logout(self) -> Any:
        """Revoke this client's session on the control plane."""
        return self._run(_Call("POST", "/api/v1/auth/logout"))

    def me(self) -> Any:
        """``{user: {id, email, role}, org: {id, name, metadata_key_fingerprint}}``."""
        return self._run(_Call("GET", "/api/v1/me"))

    def put_metadata_key(self, fingerprint: str) -> Any:
        """Register the fingerprint of the organisation's metadata key (owner only)."""
        body = {"fingerprint": fingerprint}
        return self._run(_Call("PUT", "/api/v1/org/metadata-key", json=body))

    # ------------------------------------------------------------ single sign-on
    def sso_config(self, org_id: str) -> Any:
        """``{issuer, client_id}`` of the organisation's OpenID provider (no session needed)."""
        return self._run(_Call("GET", f"/api/v1/auth/sso/{_ref(org_id)}"))

    def sso_start(self, org_id: str) -> Any:
        """Start a single sign-on: provider, client id, ``login_id`` and the ``nonce``."""
        return self._run(_Call("POST", f"/api/v1/auth/sso/{_ref(org_id)}/start"))

    def sso_login(self, org_id: str, id_token: str, login_id: str) -> Any:
        """Log in with an ID token of that provider; the client keeps the session token."""
        body = {"org_id": org_id, "id_token": id_token, "login_id": login_id}
        return self._run(_Call("POST", "/api/v1/auth/sso", json=body, keeps_token=True))

    def set_sso(self, doc: dict[str, Any]) -> Any:
        """Trust a provider: ``{issuer, client_id, role_map, groups_claim?, require_sso?}``."""
        return self._run(_Call("PUT", "/api/v1/org/sso", json=dict(doc)))

    # ------------------------------------------------------------ users
    def list_users(self) -> Any:
        """The organisation's users (the list of ``{id, email, role, created_at}``; admin)."""
        return self._run(_Call("GET", "/api/v1/users", unwrap="items"))

    def invite(self, email: str, role: str) -> Any:
        """An invitation ``{id, email, role, token, expires_at}`` (the token is shown once)."""
        body = {"email": email, "role": role}
        return self._run(_Call("POST", "/api/v1/invitations", json=body))

    def accept_invitation(self, token: str, password: str) -> Any:
        """Join with an invitation token and a new password (no session needed)."""
        body = {"token": token, "password": password}
        return self._run(_Call("POST", "/api/v1/invitations/accept", json=body))

    def set_role(self, user_id: str, role: str) -> Any:
        """Change a user's role; the user as the API shows it."""
        path = f"/api/v1/users/{_ref(user_id)}/role"
        return self._run(_Call("PUT", path, json={"role": role}))

    def remove_user(self, user_id: str) -> Any:
        """Remove a user (their sessions end)."""
        return self._run(_Call("DELETE", f"/api/v1/users/{_ref(user_id)}"))

    def reset_password(self, user_id: str) -> Any:
        """Lock a user's password and get a single-use reset token ``{token, expires_at}``."""
        return self._run(_Call("POST", f"/api/v1/users/{_ref(user_id)}/password-reset"))

    def complete_reset(self, token: str, password: str) -> Any:
        """Choose a new password with a reset token (no session needed)."""
        body = {"token": token, "password": password}
        return self._run(_Call("POST", "/api/v1/password-resets/complete", json=body))

    def change_password(self, current: str, new: str) -> Any:
        """Change your own password; ``{sessions_ended}`` (your other sessions)."""
        body = {"current_password": current, "new_password": new}
        return self._run(_Call("PUT", "/api/v1/me/password", json=body))

    def list_sessions(self, user_id: str | None = None) -> Any:
        """Live sessions (the list of ``{id, user_id, created_at, expires_at, current}``) of a
        user (admin) or, without ``user_id``, your own."""
        path = f"/api/v1/users/{_ref(user_id)}/sessions" if user_id else "/api/v1/me/sessions"
        return self._run(_Call("GET", path, unwrap="items"))

    def end_sessions(self, user_id: str | None = None, session_id: str | None = None) -> Any:
        """End one session (``session_id``) or all of a user's (admin) or your own; ``{ended}``."""
        path = f"/api/v1/users/{_ref(user_id)}/sessions" if user_id else "/api/v1/me/sessions"
        if session_id:
            path += f"/{_ref(session_id)}"
        return self._run(_Call("DELETE", path))

    # ------------------------------------------------------------ enrollment tokens
    def create_enrollment_token(self, description: str = "", ttl_seconds: int | None = None) -> Any:
        """A single-use enrollment token ``{id, token, ca_pin, description, expires_at}``."""
        body: dict[str, Any] = {"description": description}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return self._run(_Call("POST", "/api/v1/enrollment-tokens", json=body))

    def list_enrollment_tokens(self) -> Any:
        """``{items: [...]}`` (never the token strings)."""
        return self._run(_Call("GET", "/api/v1/enrollment-tokens"))

    def revoke_enrollment_token(self, token_id: str) -> Any:
        """Revoke an unused enrollment token."""
        return self._run(_Call("DELETE", f"/api/v1/enrollment-tokens/{_ref(token_id)}"))

    # ------------------------------------------------------------ vaults
    def list_vaults(self, cursor: str | None = None, limit: int | None = None) -> Any:
        """One page ``{items, next_cursor}`` of vaults with live status."""
        params = _params(cursor=cursor, limit=limit)
        return self._run(_Call("GET", "/api/v1/vaults", params=params))

    def get_vault(self, vault_id: str) -> Any:
        """One vault."""
        return self._run(_Call("GET", f"/api/v1/vaults/{_ref(vault_id)}"))

    def revoke_vault(self, vault_id: str) -> Any:
        """Revoke a vault and its certificate."""
        return self._run(_Call("POST", f"/api/v1/vaults/{_ref(vault_id)}/revoke"))

    def inventory(self, vault_id: str, cursor: str | None = None, limit: int | None = None) -> Any:
        """One page ``{items, next_cursor}`` of a vault's secrets (opaque ids, sealed labels)."""
        params = _params(cursor=cursor, limit=limit)
        return self._run(_Call("GET", f"/api/v1/vaults/{_ref(vault_id)}/inventory", params=params))

    # ------------------------------------------------------------ commands
    def create_command(
        self, vault_id: str, command: str, args: dict[str, Any] | None = None
    ) -> Any:
        """Queue ``rotate``/``resync`` for a vault; the answer is the command (``pending``).

        A command is ``{id, vault_id, command, args, state, result, created_at, updated_at}``;
        ``state`` goes pending → sent → succeeded | failed, ``result`` is the agent's message.
        """
        if command not in COMMANDS:
            raise e.ValidationError(f"command must be one of {', '.join(COMMANDS)}")
        body = {"command": command, "args": dict(args or {})}
        return self._run(_Call("POST", f"/api/v1/vaults/{_ref(vault_id)}/commands", json=body))

    def send_command(self, vault_id: str, body: dict[str, Any]) -> Any:
        """Queue a sealed command (``{"intent": …}``, made by ``apps.core.intents``)."""
        return self._run(_Call("POST", f"/api/v1/vaults/{_ref(vault_id)}/commands", json=body))

    def rotate_secret(self, vault_id: str, secret_id: str) -> Any:
        """Ask a vault to rotate one secret (by its opaque id)."""
        return self.create_command(vault_id, "rotate", {"secret_id": secret_id})

    def resync(self, vault_id: str) -> Any:
        """Ask a vault to send its whole inventory again."""
        return self.create_command(vault_id, "resync", {})

    def list_commands(
        self, vault_id: str, cursor: str | None = None, limit: int | None = None
    ) -> Any:
        """One page ``{items, next_cursor}`` of the commands sent to a vault, oldest first."""
        params = _params(cursor=cursor, limit=limit)
        return self._run(_Call("GET", f"/api/v1/vaults/{_ref(vault_id)}/commands", params=params))

    def get_command(self, command_id: str) -> Any:
        """One command with its state and result."""
        return self._run(_Call("GET", f"/api/v1/commands/{_ref(command_id)}"))

    # ------------------------------------------------------------ alerts
    def list_alerts(
        self, state: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> Any:
        """One page ``{items, next_cursor}`` of alerts, optionally of one state."""
        params = _params(state=state, cursor=cursor, limit=limit)
        return self._run(_Call("GET", "/api/v1/alerts", params=params))

    def acknowledge_alert(self, alert_id: str) -> Any:
        """open → acknowledged."""
        return self._run(_Call("POST", f"/api/v1/alerts/{_ref(alert_id)}/acknowledge"))

    def resolve_alert(self, alert_id: str) -> Any:
        """→ resolved."""
        return self._run(_Call("POST", f"/api/v1/alerts/{_ref(alert_id)}/resolve"))

    # ------------------------------------------------------------ policies
    def list_policies(self) -> Any:
        """Every rotation policy of the organisation, by name (the list of ``{items}``)."""
        return self._run(_Call("GET", "/api/v1/policies", unwrap="items"))

    def get_policy(self, policy_id: str) -> Any:
        """One policy."""
        return self._run(_Call("GET", f"/api/v1/policies/{_ref(policy_id)}"))

    def create_policy(self, doc: dict[str, Any]) -> Any:
        """A new policy ``{name, selector, interval_seconds, notice_seconds?, rotator, scope?}``."""
        return self._run(_Call("POST", "/api/v1/policies", json=dict(doc)))

    def update_policy(self, policy_id: str, doc: dict[str, Any]) -> Any:
        """Change any subset of a policy's fields; its version goes up by one."""
        path = f"/api/v1/policies/{_ref(policy_id)}"
        return self._run(_Call("PUT", path, json=dict(doc)))

    def delete_policy(self, policy_id: str, body: dict[str, Any] | None = None) -> Any:
        """Delete a policy (None); a sealed one with its sealed deletion (``{"intent": …}``)."""
        path = f"/api/v1/policies/{_ref(policy_id)}"
        return self._run(_Call("DELETE", path, json=dict(body) if body else None))

    # ------------------------------------------------------------ audit and usage
    def query_audit(
        self,
        after: int = 0,
        limit: int = 100,
        action: str | None = None,
        source: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before: int | None = None,
    ) -> Any:
        """One page of the audit log: ``{items, next_after}`` oldest first after ``seq``, or
        with ``before`` (0: the newest) ``{items, next_before}`` newest first."""
        params = _params(
            after=None if before is not None and not after else after,
            limit=limit,
            action=action,
            source=source,
            since=since,
            until=until,
            before=before,
        )
        return self._run(_Call("GET", "/api/v1/audit", params=params))

    def usage(
        self, start: str | None = None, end: str | None = None, vault_id: str | None = None
    ) -> Any:
        """``{from, to, rows: [{day, vault_id, operation, count}], total}``; dates inclusive."""
        params = _params(**{"from": start, "to": end, "vault_id": vault_id})
        return self._run(_Call("GET", "/api/v1/analytics/usage", params=params))

    # ------------------------------------------------------------ system
    def health(self) -> Any:
        """Liveness (no session needed)."""
        return self._run(_Call("GET", "/api/v1/health"))


class _Base:
    """What both clients hold: the URL, the session token (never shown) and the TLS choice."""

    url: str
    _headers: httpx.Headers  # the HTTP client's own headers, where the token goes
    _token: str | None

    def _init(
        self,
        url: str,
        token: str | None,
        ca_file: Path | str | None,
        ssl_context: ssl.SSLContext | None,
        pin: str | None = None,
    ) -> dict[str, Any]:
        self.url = check_url(url)
        self._token = None
        return {
            "base_url": self.url,
            "verify": _verify(self.url, ca_file, ssl_context, pin),
            "headers": {"User-Agent": USER_AGENT},
        }

    @property
    def token(self) -> str | None:
        """The session token in use (``kvs_…``), or None before login."""
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value
        if value:
            self._headers["Authorization"] = f"Bearer {value}"
        else:
            self._headers.pop("Authorization", None)

    def _keep(self, call: _Call, body: Any) -> Any:
        if call.keeps_token and isinstance(body, dict) and isinstance(body.get("token"), str):
            self.token = body["token"]
        if call.unwrap is not None and isinstance(body, dict):
            return body.get(call.unwrap, [])
        return body

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, logged_in={self._token is not None})"


def _pages(fetch: Callable[[str | None], Any]) -> Iterator[dict[str, Any]]:
    """Every item of a cursor-paged listing: ``fetch(cursor)`` gives one page."""
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return


async def _apages(fetch: Callable[[str | None], Awaitable[Any]]) -> AsyncIterator[dict[str, Any]]:
    """:func:`_pages` for awaitable pages."""
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        for item in page["items"]:
            yield item
        cursor = page.get("next_cursor")
        if not cursor:
            return


class ControlPlaneClient(_Base, _Api):
    """Blocking client of the operator API."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        ca_file: Path | str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 15.0,
        pin: str | None = None,
    ) -> None:
        kw = self._init(url, token, ca_file, ssl_context, pin)
        self._http = httpx.Client(timeout=timeout, **kw)
        self._headers = self._http.headers
        self.token = token

    def __enter__(self) -> ControlPlaneClient:
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
            raise _unreachable(self.url, exc) from None
        return self._keep(call, _read(resp, call))

    def iter_vaults(self, page_size: int = 200) -> Iterator[dict[str, Any]]:
        """Every vault, following the cursor page by page."""
        return _pages(lambda c: self.list_vaults(cursor=c, limit=page_size))

    def iter_inventory(self, vault_id: str, page_size: int = 500) -> Iterator[dict[str, Any]]:
        """Every inventory item of a vault, following the cursor page by page."""
        return _pages(lambda c: self.inventory(vault_id, cursor=c, limit=page_size))

    def iter_commands(self, vault_id: str, page_size: int = 500) -> Iterator[dict[str, Any]]:
        """Every command sent to a vault, oldest first."""
        return _pages(lambda c: self.list_commands(vault_id, cursor=c, limit=page_size))


class AsyncControlPlaneClient(_Base, _Api):
    """Asyncio client: the same methods as :class:`ControlPlaneClient`, awaitable."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        ca_file: Path | str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 15.0,
        pin: str | None = None,
    ) -> None:
        kw = self._init(url, token, ca_file, ssl_context, pin)
        self._http = httpx.AsyncClient(timeout=timeout, **kw)
        self._headers = self._http.headers
        self.token = token

    async def __aenter__(self) -> AsyncControlPlaneClient:
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
            raise _unreachable(self.url, exc) from None
        return self._keep(call, _read(resp, call))

    async def iter_vaults(self, page_size: int = 200) -> AsyncIterator[dict[str, Any]]:
        """Every vault, following the cursor page by page."""
        async for item in _apages(lambda c: self.list_vaults(cursor=c, limit=page_size)):
            yield item

    async def iter_inventory(
        self, vault_id: str, page_size: int = 500
    ) -> AsyncIterator[dict[str, Any]]:
        """Every inventory item of a vault, following the cursor page by page."""
        async for item in _apages(lambda c: self.inventory(vault_id, cursor=c, limit=page_size)):
            yield item

    async def iter_commands(
        self, vault_id: str, page_size: int = 500
    ) -> AsyncIterator[dict[str, Any]]:
        """Every command sent to a vault, oldest first."""
        async for item in _apages(
            lambda c: self.list_commands(vault_id, cursor=c, limit=page_size)
        ):
            yield item
