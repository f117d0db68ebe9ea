"""Views of the agent gateway: bootstrap (the service CA) and the uplink WebSocket.

Registration and liveness reuse the operator API's views (``views/vaults.register``,
``views/system.health``).
"""

from __future__ import annotations

from aiohttp import web
from cryptography import x509

from common import uplink
from control_plane.errors import UplinkRefusedError
from control_plane.gateway.agent_link import AgentLink, LinkServices
from control_plane.gateway.switchboard import AgentSwitchboard
from control_plane.services.presence import VaultRef
from control_plane.views.context import cp_of, target

SWITCHBOARD = web.AppKey("agent_switchboard", AgentSwitchboard)
LINK_SERVICES = web.AppKey("agent_link_services", LinkServices)


async def bootstrap(request: web.Request) -> web.Response:
    """GET /agent/bootstrap — the service CA and its pin (nothing secret)."""
    ca = await cp_of(request).vaults.cas.service()
    return web.json_response({"ca_certificate": ca.cert_pem().decode(), "pin": ca.pin()})


def peer_certificate(request: web.Request) -> x509.Certificate | None:
    """The client certificate TLS verified against the service CA, or None."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise UplinkRefusedError(
            uplink.ERR_UNKNOWN_VAULT, "the client certificate cannot be read"
        ) from None


async def _vault_of(request: web.Request) -> VaultRef:
    """The vault of the request's client certificate (the parsed certificate is not kept for
    the life of the socket)."""
    cert = peer_certificate(request)
    if cert is None:
        raise UplinkRefusedError(
            uplink.ERR_NO_CERTIFICATE,
            "the uplink needs the client certificate from enrollment",
            http_status=401,
        )
    return await cp_of(request).presence.identify(cert)


async def uplink_socket(request: web.Request) -> web.StreamResponse:
    """GET /agent/uplink — the agent's WebSocket (client certificate required)."""
    cp = cp_of(request)
    vault = await _vault_of(request)
    target(request, vault.id)
    ws = web.WebSocketResponse(
        heartbeat=cp.settings.gateway_ping_seconds, max_msg_size=uplink.MAX_FRAME, compress=False
    )
    await ws.prepare(request)
    await AgentLink(request.app[LINK_SERVICES], request.app[SWITCHBOARD], ws, vault).run()
    return ws
