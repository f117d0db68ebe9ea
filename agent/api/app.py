"""The agent's aiohttp application: factory, error translation, authentication and audit.

One middleware does the edge work of every request, in order: authenticate (unless the route is
public), write an *intent* audit entry before any write runs, call the view, translate errors
into the JSON error shape, then write the outcome audit entry *before* the response leaves. If
an audit entry cannot be written the caller gets 503 and none of the view's bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from agent.api.authlimit import SUMMARY_OP, FailedAuthLimiter
from agent.api.context import AGENT, AUDIT, RequestAudit
from agent.api.lifecycle import add_background_services
from agent.api.routes import PUBLIC, add_routes
from agent.api.secret_views import READ_BODIES, ReadPrefixes
from agent.assembly import Agent
from agent.workers import follow
from common.errors import AuthenticationError, IntegrityError, KeyVaultError, UnavailableError
from serverkit.body import MAX_BODY
from serverkit.edge import error_response, respond

log = logging.getLogger("keyvault.agent.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WRITES = frozenset({"POST", "PUT", "DELETE", "PATCH"})
AUTH_LIMIT = web.AppKey("auth_limit", FailedAuthLimiter)


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate, audit (fail closed), translate errors, count."""
    agent = request.app[AGENT]
    started = time.perf_counter()
    route = request.match_info.route.name or "unknown"
    info = RequestAudit(op=route)
    request[AUDIT] = info

    async def call() -> web.StreamResponse:
        if route not in PUBLIC and route != "unknown":
            info.token = await agent.tokens.authenticate(request.headers.get("Authorization"))
            info.actor = info.token.id
        if request.method in WRITES and route != "unknown":
            agent.audit.append(
                op=route,
                outcome="attempt",
                status=0,
                actor=info.actor,
                target=request.match_info.get("id"),
                remote=request.remote,
            )
        return await handler(request)

    response, failure = await respond(request, call, server="this agent", log=log, log_name="agent")
    if isinstance(failure, IntegrityError):
        agent.metrics.integrity_failures += 1
        log.error("integrity failure on %s %s", request.method, route)
    outcome = "ok" if failure is None else _outcome(failure)
    try:
        if _audited(request, failure):
            agent.audit.append(
                op=route,
                outcome=outcome,
                status=response.status,
                actor=info.actor,
                target=info.target,
                remote=request.remote,
                extra=info.extra,
            )
    except UnavailableError as exc:
        response = audit_refusal(agent, exc)
    agent.metrics.observe(route, response.status, time.perf_counter() - started)
    return response


def audit_refusal(agent: Agent, exc: UnavailableError) -> web.Response:
    """The answer to a request whose audit entry could not be written (counted and logged):
    the error, never the view's bytes."""
    agent.metrics.audit_failures += 1
    log.error("audit log write failed; refusing request: %s", exc.message)
    return error_response(exc)


def _audited(request: web.Request, failure: KeyVaultError | None) -> bool:
    """Whether this request gets its own audit entry: all do, except failed authentications
    beyond the per-source rate, which are counted and summarised (agent/api/authlimit.py)."""
    if not isinstance(failure, AuthenticationError):
        return True
    limiter = request.app[AUTH_LIMIT]
    write_summaries(request.app, limiter.due())
    return limiter.admit(request.remote)


def write_summaries(app: web.Application, due: list[tuple[str, int]]) -> None:
    """One audit entry per source whose failed authentications were only counted."""
    for source, count in due:
        app[AGENT].audit.append(
            op=SUMMARY_OP,
            outcome="denied",
            status=401,
            remote=source,
            extra={"suppressed": count, "window_seconds": app[AUTH_LIMIT].window},
        )


async def _flush_auth_summaries(app: web.Application) -> None:
    try:
        write_summaries(app, app[AUTH_LIMIT].due(everything=True))
    except UnavailableError as exc:
        log.error("could not write the failed-authentication summary: %s", exc.message)


async def _end_change_streams(app: web.Application) -> None:
    app[AGENT].secrets.feed.end_all()  # open change streams finish instead of holding shutdown


def _outcome(failure: KeyVaultError) -> str:
    """The audit outcome of a failed request: denied (401/403) or error."""
    return "denied" if failure.http_status in (401, 403) else "error"


@web.middleware
async def catch_up(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With several worker processes: before anything else, forget what another worker's
    committed writes made stale (agent/workers.py)."""
    request.app[AGENT].catch_up()
    return await handler(request)


async def _follow_workers(app: web.Application) -> AsyncIterator[None]:
    """While the app runs, catch up with the other workers even with no request coming in
    (background readers, open change streams)."""
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(follow(app[AGENT].catch_up, stop))
    try:
        yield
    finally:
        stop.set()
        await task


def build_app(agent: Agent, *, background: bool = False) -> web.Application:
    """The agent API for an opened :class:`Agent`.

    With ``background`` the app also runs the agent's uplink and rotation scheduler for as
    long as it runs (``agent.api.lifecycle``); tests of the API alone leave them off.
    """
    several = agent.shared is not None  # one of several worker processes
    app = web.Application(
        middlewares=[catch_up, edge] if several else [edge],
        client_max_size=agent.settings.max_body_bytes,
    )
    app[AGENT] = agent
    app[MAX_BODY] = agent.settings.max_body_bytes
    app[AUTH_LIMIT] = FailedAuthLimiter()
    app[READ_BODIES] = ReadPrefixes()
    app.on_shutdown.append(_flush_auth_summaries)
    app.on_shutdown.append(_end_change_streams)
    if several:
        app.cleanup_ctx.append(_follow_workers)
    if background:
        add_background_services(app, agent)
    add_routes(app)
    return app
