"""The control plane's aiohttp application: factory, resources, and the one edge middleware.

The edge middleware authenticates (session token) and checks the route's least role, calls the
view, turns every error into the JSON error shape (never a stack trace), writes an audit entry
for each change an operator makes, and counts the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from control_plane.db import utcnow
from control_plane.gateway.app import GATEWAY, Gateway
from control_plane.routes import LEAST_ROLE, add_routes
from control_plane.runtime import Clock, ControlPlane, open_control_plane
from control_plane.settings import ControlPlaneSettings
from control_plane.views.context import CP, GATEWAY_ADDRESS, INFO, MAX_BODY, RequestInfo
from serverkit.edge import respond

log = logging.getLogger("keyvault.control_plane.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WRITES = frozenset({"POST", "PUT", "DELETE", "PATCH"})
SETTINGS = web.AppKey("settings", ControlPlaneSettings)


async def _audit(cp: ControlPlane, request: web.Request, info: RequestInfo, status: int) -> None:
    """Record an operator's change (metadata only); a failure is logged, not fatal."""
    if request.method not in WRITES or info.principal is None or status >= 500:
        return
    outcome = "ok" if status < 400 else "denied" if status in (401, 403) else "error"
    try:
        await cp.audit.record(
            info.principal.org_id,
            info.route,
            actor=info.principal.user_id,
            target=info.target if status != 404 else None,  # a 404 names nothing of ours
            outcome=outcome,
            details={"status": status},
        )
    except Exception:
        log.exception("audit write failed for %s", info.route)


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate and authorise, translate errors, audit, count."""
    cp = request.app[CP]
    started = time.perf_counter()
    route = request.match_info.route.name or "unknown"
    info = RequestInfo(route)
    request[INFO] = info

    async def call() -> web.StreamResponse:
        role = LEAST_ROLE.get(route)
        if role is not None:
            info.principal = await cp.accounts.authenticate(request.headers.get("Authorization"))
            info.principal.require(role)
        return await handler(request)

    response, _ = await respond(
        request, call, server="the control plane", log=log, log_name="control-plane"
    )
    await _audit(cp, request, info, response.status)
    cp.metrics.observe(route, response.status, time.perf_counter() - started)
    return response


async def _sweeper(cp: ControlPlane) -> None:
    """Run the offline, certificate and rotation-overdue sweeps periodically (each replica
    tries; the lock lets one through)."""
    while True:
        await asyncio.sleep(cp.settings.sweep_interval_seconds)
        for sweep in (
            cp.vaults.sweep_offline,
            cp.vaults.sweep_certificates,
            cp.rotations.sweep_overdue,
        ):
            try:
                await sweep()
            except Exception:
                log.exception("sweep %s failed; will retry", sweep.__name__)


def build_app(settings: ControlPlaneSettings, *, clock: Clock = utcnow) -> web.Application:
    """The control-plane API; resources open on startup and close on cleanup.

    Starting it also starts this replica's agent gateway (a second TLS listener, see
    ``control_plane/gateway/``) unless ``gateway_enabled`` is off; ``app[GATEWAY].url`` names it.
    """
    app = web.Application(middlewares=[edge], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[MAX_BODY] = settings.max_body_bytes

    async def resources(app: web.Application) -> AsyncIterator[None]:
        cp = await open_control_plane(settings, clock=clock)
        app[CP] = cp
        gateway: Gateway | None = None
        try:
            if settings.gateway_enabled:
                gateway = Gateway(cp)
                await gateway.start()
                app[GATEWAY] = gateway
                app[GATEWAY_ADDRESS] = gateway.url
            if settings.background_tasks:
                cp.spawn(_sweeper(cp), "sweeps")
            yield
        finally:
            if gateway is not None:
                with contextlib.suppress(Exception):
                    await gateway.stop()
            with contextlib.suppress(Exception):
                await cp.close()

    app.cleanup_ctx.append(resources)
    add_routes(app)
    return app
