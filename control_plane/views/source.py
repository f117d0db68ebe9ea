"""Who is calling, as the login throttle counts it: the client's network address.

Directly connected clients are known by their peer address. Behind a TLS-terminating proxy
(``tls_proxy``) the peer is the proxy, so the last ``X-Forwarded-For`` entry — the one the
proxy itself appended — names the client; earlier entries are the client's own claims and
are ignored. IPv6 clients count per /64, which is what one host usually holds.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from control_plane.views.context import cp_of

UNKNOWN = "unknown"


def _normalise(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return UNKNOWN
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


def client_source(request: web.Request) -> str:
    """The caller's address (or /64 network) for throttling."""
    if cp_of(request).settings.tls_proxy:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return _normalise(last)
    return _normalise(request.remote or "")
