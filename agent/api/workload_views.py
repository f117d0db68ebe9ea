"""HTTP views for workloads: JWT login (``/auth/jwt``) and the change stream (``/changes``).

Thin over :mod:`agent.workload` and :class:`agent.changes.ChangeFeed` (contract:
``docs/workloads.md``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from aiohttp import web

from agent.api.context import AGENT, AUDIT, token_of
from agent.auth import Token
from agent.changes import SecretChange
from agent.secrets import ID_RE, validate_name
from agent.settings import JWT_NAME_PATTERN
from agent.workload import JWS_PATTERN, MAX_JWT_BYTES, JwtLoginError
from common.errors import AuthenticationError, ValidationError
from serverkit.body import json_object, query, typed

HEARTBEAT_S = 15.0
ROLE_RE = re.compile(JWT_NAME_PATTERN)
JWS_RE = re.compile(JWS_PATTERN)
HEARTBEAT = SecretChange("", "", 0, "resync")  # a marker object: "time for a heartbeat"
MAX_NAMES = 100
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Accel-Buffering": "no",
}


async def jwt_login(request: web.Request) -> web.Response:
    """POST /api/v1/auth/jwt — a workload's JWT for a short-lived token within a role."""
    agent = request.app[AGENT]
    doc = await json_object(request, {"role", "jwt"}, frozenset({"role", "jwt"}))
    role_name = typed(doc, "role", str, "a string")
    token = typed(doc, "jwt", str, "a string")
    if not ROLE_RE.fullmatch(role_name):
        raise ValidationError(f"role must match {JWT_NAME_PATTERN} (a name from auth.jwt.roles)")
    if len(token) > MAX_JWT_BYTES or not JWS_RE.fullmatch(token):
        raise ValidationError(
            "jwt must be a compact JWS (three base64url parts joined by dots) of at most 16 KiB"
        )
    login = agent.jwt_login
    if login is None or not login.enabled:
        raise JwtLoginError(
            "JWT login is not configured on this agent: add issuers and roles under auth.jwt "
            "in agent.yaml (docs/workloads.md)"
        )
    info = request[AUDIT]
    role = login.role(role_name)
    info.extra = {"role": role.name, "issuer": role.issuer}
    done = await login.login(role.name, token)
    info.extra["sub"] = done.subject
    info.actor = done.token.id
    info.target = done.token.id
    return web.json_response(
        {
            "token": done.secret,
            "token_id": done.token.id,
            "expires_at": done.token.expires_at,
            "policy": done.role.policy,
        },
        headers={"Cache-Control": "no-store"},
    )


def _names(request: web.Request) -> set[str] | None:
    raw = query(request, {"names"}).get("names")
    if raw is None:
        return None
    names = {n.strip() for n in raw.split(",") if n.strip()}
    if not names or len(names) > MAX_NAMES:
        raise ValidationError(f"names must list 1-{MAX_NAMES} secret names or ids, comma-separated")
    for name in names:
        if not ID_RE.fullmatch(name):
            validate_name(name)
    return names


def _visible(change: SecretChange, token: Token, names: set[str] | None) -> bool:
    """Whether this stream shows ``change``: a resync always; else a name the token may
    read, and one of the names asked for."""
    if change.event == "resync":
        return True
    if names is not None and change.name not in names and change.id not in names:
        return False
    return token.policy.allows("read", change.name)


def _event(change: SecretChange) -> bytes:
    return f"event: {change.event}\ndata: {json.dumps(change.to_json())}\n\n".encode()


async def changes(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/changes — Server-Sent Events of changes to secrets the token may read.

    Names, ids and versions only, never values; a comment line every 15 s keeps it alive; the
    stream ends when the token expires or is revoked, or the agent stops.
    """
    agent = request.app[AGENT]
    token = token_of(request)
    names = _names(request)
    header = request.headers.get("Authorization")
    response = web.StreamResponse(headers=SSE_HEADERS)
    sub = agent.secrets.feed.subscribe()
    checked = time.monotonic()
    try:
        await response.prepare(request)
        await response.write(b": keyvault change stream\n\n")
        while True:
            try:
                change = await asyncio.wait_for(sub.get(), HEARTBEAT_S)
            except TimeoutError:
                change = HEARTBEAT
            if time.monotonic() - checked >= HEARTBEAT_S:
                checked = time.monotonic()
                try:  # an expired or revoked token ends its stream
                    await agent.tokens.authenticate(header)
                except AuthenticationError:
                    await response.write(b'event: end\ndata: {"reason": "token"}\n\n')
                    break
            if change is None:
                break
            if change is HEARTBEAT:
                await response.write(b": heartbeat\n\n")
            elif _visible(change, token, names):
                await response.write(_event(change))
    except ConnectionError:
        pass  # the client went away
    finally:
        sub.close()
    return response
