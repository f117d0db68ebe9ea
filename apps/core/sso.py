"""Single sign-on from an operator's app: OpenID Connect authorization code + PKCE with a
loopback redirect (RFC 8252), shared by the CLI, the TUI and the desktop app.

1. start a login at the control plane: it says which provider and client id the organisation
   trusts and issues a single-use ``login_id`` with the ``nonce`` the ID token must carry;
2. read the provider's discovery document;
3. listen on ``http://127.0.0.1:<free port>/callback`` (this machine only), open the browser
   at the authorization URL with a fresh ``state``, that ``nonce`` and an S256 code challenge;
4. take the code the browser brings back (the state must match), exchange it with the
   verifier for an ID token;
5. hand the ID token and the login id to the control plane, which verifies the token (its
   nonce included) and returns a session.

The verifier, code and ID token stay in memory; nothing here is logged.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from common.cpclient import ControlPlaneClient
from common.errors import AuthenticationError, UnavailableError, ValidationError

Opener = Callable[[str], Any]
TIMEOUT = 300.0


@dataclass
class _Answer:
    """What the browser brought back to the loopback listener."""

    params: dict[str, str] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _listener(answer: _Answer) -> http.server.HTTPServer:
    class Callback(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            answer.params = {k: v[0] for k, v in query.items()}
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(b"KeyVault: you are signed in; you can close this window.\n")
            answer.done.set()

        def log_message(self, *_: Any) -> None:
            return  # the query holds the code: never logged

    return http.server.HTTPServer(("127.0.0.1", 0), Callback)


def _discover(issuer: str) -> dict[str, Any]:
    try:
        found = httpx.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration", timeout=10)
        found.raise_for_status()
        doc: dict[str, Any] = found.json()
        return doc
    except (httpx.HTTPError, ValueError) as exc:
        raise UnavailableError(f"the identity provider {issuer} cannot be read: {exc}") from None


def id_token_from_provider(
    issuer: str,
    client_id: str,
    open_browser: Opener,
    timeout: float = TIMEOUT,
    client_secret: str | None = None,
    nonce: str | None = None,
) -> str:
    """Run the code + PKCE flow with a loopback redirect; the ID token the provider issued.
    ``nonce`` is the one the control plane issued for this login (a fresh one without)."""
    meta = _discover(issuer)
    verifier, challenge = _pkce()
    state, nonce = secrets.token_urlsafe(16), nonce or secrets.token_urlsafe(16)
    answer = _Answer()
    server = _listener(answer)
    redirect = f"http://127.0.0.1:{server.server_address[1]}/callback"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect,
            "scope": "openid email profile",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        open_browser(f"{meta['authorization_endpoint']}?{urlencode(query)}")
        if not answer.done.wait(timeout):
            raise AuthenticationError("single sign-on timed out waiting for the browser")
    finally:
        server.shutdown()
        server.server_close()
    params = answer.params
    if params.get("state") != state:
        raise AuthenticationError("single sign-on refused: the browser's answer is not ours")
    if "code" not in params:
        why = params.get("error_description") or params.get("error") or "no code"
        raise AuthenticationError(f"the identity provider refused: {why}")
    form = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": redirect,
        "client_id": client_id,
        "code_verifier": verifier,
    }
    if client_secret:  # a native-app "secret" some providers insist on (RFC 8252 §8.5)
        form["client_secret"] = client_secret
    exchanged = httpx.post(str(meta["token_endpoint"]), data=form, timeout=15)
    if exchanged.status_code != 200 or "id_token" not in exchanged.text:
        raise AuthenticationError(
            f"the identity provider did not issue an ID token (HTTP {exchanged.status_code})"
        )
    id_token = str(exchanged.json()["id_token"])
    if _unverified_claims(id_token).get("nonce") != nonce:
        raise AuthenticationError("single sign-on refused: the ID token is not for this sign-in")
    return id_token


def _unverified_claims(id_token: str) -> dict[str, Any]:
    """The token's payload, read only to compare the nonce: the control plane verifies it."""
    try:
        payload = id_token.split(".")[1]
        doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def sso_login(
    cp: ControlPlaneClient, org_id: str, open_browser: Opener, timeout: float = TIMEOUT
) -> dict[str, Any]:
    """Sign in to the organisation through its provider; the control plane's session answer
    (the client keeps the token)."""
    if not org_id.strip():
        raise ValidationError("give the organisation's id (org_…) for single sign-on")
    login = cp.sso_start(org_id.strip())
    id_token = id_token_from_provider(
        str(login["issuer"]),
        str(login["client_id"]),
        open_browser,
        timeout,
        login.get("client_secret"),
        str(login["nonce"]),
    )
    return dict(cp.sso_login(org_id.strip(), id_token, str(login["login_id"])))
