"""The three TLS contexts of the fleet link, all TLS 1.3 only.

* :func:`bootstrap_context` -- for the one unauthenticated request of enrollment (fetching the
  service CA). It verifies nothing; what it fetches is checked against the token's pin, and the
  request carries no secret.
* :func:`pinned_context` -- trusts only the CA whose pin was just checked (hostname checked).
* :func:`uplink_context` -- the WebSocket: trusts only ``service-ca.pem`` and presents the
  agent's client certificate chain.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from common.tls import client_context


def bootstrap_context() -> ssl.SSLContext:
    """TLS 1.3 without certificate verification (used only before the pin is checked)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def pinned_context(ca_pem: str) -> ssl.SSLContext:
    """TLS 1.3 trusting only ``ca_pem`` (the pinned service CA), hostname checked."""
    return client_context(ca_pem=ca_pem)


def uplink_context(service_ca: Path, chain: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.3 trusting only the service CA, presenting ``chain`` (leaf + org CA) and ``key``."""
    return client_context(service_ca, cert_file=chain, key_file=key)
