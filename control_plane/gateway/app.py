"""The agent gateway's aiohttp application and its TLS listener (one per replica).

At start the replica issues itself a server certificate from the service CA for
``gateway_names``; the TLS context (1.3 only) asks for a client certificate but does not
require one (enrollment has none yet) and trusts only the service CA, so the certificate of
any organisation's agent (leaf + organisation CA) verifies without reloading anything.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from common.errors import KeyVaultError, NotFoundError
from common.tls import server_context, write_pem
from common.uplink import BOOTSTRAP_PATH, REGISTER_PATH, UPLINK_PATH
from control_plane.db import Batcher
from control_plane.gateway import views as g
from control_plane.gateway.agent_link import LinkServices
from control_plane.gateway.switchboard import AgentSwitchboard
from control_plane.runtime import ControlPlane
from control_plane.views import system as y
from control_plane.views import vaults as v
from control_plane.views.context import CP, INFO, MAX_BODY, RequestInfo
from control_plane.views.errors import error_response, http_exception_error
from serverkit.runner import EdgeRunner

log = logging.getLogger("keyvault.control_plane.gateway")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVER_CERT_LIFETIME = timedelta(days=365)

ROUTES: list[tuple[str, str, Handler, str]] = [
    ("GET", BOOTSTRAP_PATH, g.bootstrap, "gateway.bootstrap"),
    ("POST", REGISTER_PATH, v.register, "gateway.register"),
    ("GET", UPLINK_PATH, g.uplink_socket, "gateway.uplink"),
    ("GET", "/api/v1/health", y.health, "gateway.health"),
]


@web.middleware
async def gateway_edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Translate every error to the JSON error shape (never a stack trace); count requests."""
    cp = request.app[CP]
    started = time.perf_counter()
    route = request.match_info.route.name or "gateway.unknown"
    request[INFO] = RequestInfo(route)
    try:
        response = await handler(request)
    except KeyVaultError as exc:
        response = error_response(exc)
    except web.HTTPException as exc:
        err = http_exception_error(exc)
        if exc.status == 404:
            err = NotFoundError("no such endpoint on the agent gateway")
        response = error_response(err)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, route)
        response = error_response(KeyVaultError("internal error; see the control-plane log"))
    cp.metrics.observe(route, response.status, time.perf_counter() - started)
    return response


def build_gateway_app(
    cp: ControlPlane, switchboard: AgentSwitchboard, link_services: LinkServices
) -> web.Application:
    """The gateway's routes over the replica's running control plane."""
    app = web.Application(middlewares=[gateway_edge], client_max_size=cp.settings.max_body_bytes)
    app[CP] = cp
    app[MAX_BODY] = cp.settings.max_body_bytes
    app[g.SWITCHBOARD] = switchboard
    app[g.LINK_SERVICES] = link_services
    for method, path, view, name in ROUTES:
        app.router.add_route(method, path, view, name=name)
    return app


def _url(host: str, port: int, names: list[str]) -> str:
    if host in ("", "0.0.0.0", "::"):
        host = names[0]
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


class Gateway:
    """The agent gateway listener of one replica: TLS site, server certificate, uplink switchboard."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.switchboard = AgentSwitchboard(bus=cp.bus, policies=cp.policies, spawn=cp.spawn)
        cp.uplink_connections = lambda: len(self.switchboard)
        self.link_services = LinkServices(
            settings=cp.settings,
            clock=cp.clock,
            spawn=cp.spawn,
            metrics=cp.metrics,
            presence=cp.presence,
            policies=cp.policies,
            commands=cp.commands,
            ingest=cp.ingest,
            alerts=cp.alerts,
            org_policies=Batcher(
                cp.policies.for_uplinks, cp.spawn, "uplink-policies-read", share=True
            ),
            unfinished=Batcher(
                cp.commands.unfinished_of, cp.spawn, "uplink-commands-read", share=True
            ),
        )
        self.url = ""
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._dir: Path | None = None

    async def _tls(self) -> ssl.SSLContext:
        """Issue this replica's server certificate and build the TLS context.

        The PEM files live in a private temporary folder (0700, files 0600) only while the
        context loads them.
        """
        service = await self.cp.vaults.cas.service()
        names = self.cp.settings.gateway_names
        cert, key = service.issue_server_cert(
            names, ip_addresses=(), valid_for=SERVER_CERT_LIFETIME, clock=self.cp.clock
        )
        self._dir = Path(tempfile.mkdtemp(prefix="keyvault-gateway-"))
        try:
            return server_context(
                write_pem(self._dir / "server.crt", cert, private=True),
                write_pem(self._dir / "server.key", key, private=True),
                client_ca_file=write_pem(self._dir / "ca.crt", service.cert_pem(), private=True),
            )
        finally:
            self._remove_files()

    def _remove_files(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def start(self) -> str:
        """Listen on ``gateway_bind:gateway_port``; returns the gateway's URL."""
        settings = self.cp.settings
        ctx = await self._tls()
        runner = EdgeRunner(
            build_gateway_app(self.cp, self.switchboard, self.link_services), shutdown_timeout=5
        )
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, settings.gateway_bind, settings.gateway_port, ssl_context=ctx)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self.url = _url(settings.gateway_bind, self.port, settings.gateway_names)
        log.info("agent gateway listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        """Close every uplink (1001), stop listening, remove any file left behind."""
        await self.switchboard.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._remove_files()
        self.cp.bus.route_handler = None


GATEWAY = web.AppKey("gateway", Gateway)
