"""Views: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import time

from aiohttp import web

from common.errors import UnavailableError
from control_plane.openapi import openapi_document
from control_plane.views.context import cp_of


async def health(request: web.Request) -> web.Response:
    """GET /health — liveness only."""
    cp = cp_of(request)
    return web.json_response(
        {
            "status": "alive",
            "mode": "embedded" if cp.settings.embedded else "production",
            "uptime_seconds": round(time.monotonic() - cp.started, 3),
        }
    )


async def ready(request: web.Request) -> web.Response:
    """GET /ready — 200 when the database (and Redis) answer, else 503."""
    try:
        checks = await cp_of(request).ready()
    except UnavailableError as exc:
        body = exc.to_json()
        body["status"] = "not ready"
        return web.json_response(body, status=503)
    return web.json_response({"status": "ready", "checks": checks})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics — Prometheus text."""
    cp = cp_of(request)
    gauges = {
        "keyvault_cp_stream_subscribers": float(cp.bus.subscribers),
        "keyvault_cp_uplink_connections": float(cp.uplink_connections()),
        "keyvault_cp_uptime_seconds": time.monotonic() - cp.started,
        # replica-wide only: nothing per organisation is shown to this unauthenticated page
        "keyvault_cp_password_checks": float(cp.accounts.passwords.hashed),
        "keyvault_cp_password_checks_refused": float(cp.accounts.passwords.refused),
    }
    return web.Response(text=cp.metrics.render(gauges), content_type="text/plain", charset="utf-8")


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json — the exact description of this API."""
    return web.json_response(openapi_document())
