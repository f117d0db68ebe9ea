"""The hot read: ``GET /api/v1/secrets/{ref}`` answered in one function when nothing is unusual.

The server hands every request to :class:`FastRead` first (``serverkit.runner.EdgeRunner``'s
``front``). A read whose token, secret and data key are already in this process's caches is
answered here with the same checks, the same audit entry (written before the response leaves:
fail-closed), the same metrics and the same bytes as the full path (``agent.api.app.edge`` around
``agent.api.secret_views.read_secret``), without aiohttp's router and middleware chain.

A repeated read of the same version is answered from its rendering, the whole response the
secret service keeps for it (``SecretService.rendered``; bounded, expiring, dropped with every
change: docs/threat-model.md), without opening the value again; the checks and the audit entry
are made for every read all the same.

Anything else goes to the application untouched: another route or method, a query string, a
path with escapes or a sub-path, a token or secret not in the cache, a policy that says no, a
deleted secret, a value that does not open. The full path then gives the answer or the error
and its audit entry. Nothing is written, counted or logged before that hand-over, so no request
is answered or audited twice. Why this exists, with figures: docs/performance.md (issue 18,
round 3, "The hot read").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from time import perf_counter

from aiohttp import web
from multidict import CIMultiDict

from agent.api.app import audit_refusal
from agent.api.secret_views import NO_STORE, READ_BODIES
from agent.assembly import Agent
from common.errors import UnavailableError
from serverkit.runner import Handler

PATH = "/api/v1/secrets/"
HEADERS = CIMultiDict({**NO_STORE, "Content-Type": "application/json"})  # copied per response
ROUTE = "secrets.read"  # the route's name in agent/api/routes.py: the audit op and metrics label
# A reference whose only escape is "%2F" (how clients send the "/" of a name such as
# "prod/db/password": `urllib.parse.quote(name, safe="")`): no other escape, no dot segment, no
# sub-path, no query; 1 to 256 characters once decoded, not starting with ".". Every secret id
# and most names; the rest take the full path. Checked by `plain_ref`: one character-class
# match (about a fifth of the time of a per-character alternation), then the escapes.
_PLAIN_CHARS = re.compile(r"[A-Za-z0-9_.~%-]{1,768}")
MAX_REF = 256


def plain_ref(path: str, start: int) -> str | None:
    """``path[start:]`` decoded, when it is a plain reference (above); else None."""
    if not _PLAIN_CHARS.fullmatch(path, start) or path[start] == ".":
        return None
    ref = path[start:]
    if "%" in ref:
        ref = ref.replace("%2F", "/").replace("%2f", "/")
        if "%" in ref:
            return None
    return ref if len(ref) <= MAX_REF else None


class FastRead:
    """The server's request handler: the hot read when it applies, else ``slow(request)``."""

    def __init__(self, agent: Agent, app: web.Application, slow: Handler) -> None:
        self._agent = agent
        self._bodies = app[READ_BODIES]
        self._slow = slow
        self._several = agent.shared is not None  # worker processes: catch up first

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer ``request``."""
        response = self._read(request)
        return response if response is not None else await self._slow(request)

    def _read(self, request: web.BaseRequest) -> web.Response | None:
        """The response of a hot read, or None to leave the request to the full path."""
        if request.method != "GET":
            return None
        path = request.raw_path
        ref = plain_ref(path, len(PATH)) if path.startswith(PATH) else None
        if ref is None:
            return None
        started = perf_counter()
        agent = self._agent
        if self._several:
            agent.catch_up()
        token = agent.tokens.cached(request.headers.get("Authorization"))
        if token is None:
            return None
        secrets = agent.secrets
        hit = secrets.cached_current(ref)
        if hit is None:
            return None
        meta, sealed = hit
        if meta.deleted_at or not token.policy.allows("read", meta.name):
            return None  # the full path words the 403/404 and audits it
        body = secrets.rendered(meta, sealed, started)
        if body is None:
            try:
                value = agent.keys.open(meta.id, meta.version, sealed).decode()
            except Exception:  # the full path meets the same failure and reports it
                return None
            body = self._bodies.body(meta, meta.version, value)
            secrets.keep_rendered(meta, sealed, body, started)
        try:
            agent.audit.append(
                op=ROUTE,
                outcome="ok",
                status=200,
                actor=token.id,
                target=meta.id,
                remote=request.remote,
            )
        except UnavailableError as exc:  # as agent.api.app.edge: no entry, no value
            refused = audit_refusal(agent, exc)
            agent.metrics.observe(ROUTE, refused.status, perf_counter() - started)
            return refused
        response = web.Response(body=body, headers=HEADERS)
        agent.metrics.observe(ROUTE, 200, perf_counter() - started)
        return response


def front(agent: Agent, app: web.Application) -> Callable[[Handler], Handler] | None:
    """What ``EdgeRunner`` puts in front of the app: the hot read, when this agent caches
    secrets (SQLite; on PostgreSQL another replica may write, so every read takes the full
    path and there is nothing to put in front)."""
    if not agent.secrets.caching:
        return None
    return lambda slow: FastRead(agent, app, slow)
