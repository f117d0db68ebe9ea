"""TLS of the operator API: which listener a replica may open, and its first certificate.

Operators send passwords and hold fleet-wide session tokens over this API, so it serves
TLS 1.3 (``tls_cert_file`` + ``tls_key_file``). Plain HTTP is allowed only on a loopback
address (development, the demo behind nothing) or when the operator says a TLS-terminating
proxy sits in front (``tls_proxy``), which is then written to the log at every start.

For a first start, :func:`issue_api_certificate` and :func:`write_api_tls` make the API a certificate from the
deployment's own service CA (the one the agent gateway already uses), so clients trust it with
the service CA file or with the pin of the API key.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import ConfigError
from common.pki import spki_pin
from common.tls import server_context, write_pem
from control_plane.settings import ControlPlaneSettings

if TYPE_CHECKING:
    from control_plane.runtime import ControlPlane

log = logging.getLogger("keyvault.control_plane.api")
API_CERT_LIFETIME = timedelta(days=365)
CERT_NAME, KEY_NAME, CA_NAME = "api.crt", "api.key", "ca.crt"


def is_loopback_bind(bind: str) -> bool:
    """True when ``bind`` accepts connections from this machine only."""
    host = bind.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or the wildcard "" may reach other machines


def api_ssl_context(settings: ControlPlaneSettings) -> ssl.SSLContext | None:
    """The API's TLS 1.3 context, or None for plain HTTP where that is allowed.

    ConfigError for plain HTTP on an address other machines can reach, unless ``tls_proxy``.
    """
    if settings.tls_cert_file is not None:
        return server_context(settings.tls_cert_file, settings.tls_key_file or "")
    if is_loopback_bind(settings.bind):
        log.info("operator API serves plain HTTP on loopback %s (this machine only)", settings.bind)
        return None
    if settings.tls_proxy:
        log.warning(
            "operator API serves plain HTTP on %s because tls_proxy is set: the proxy in "
            "front must terminate TLS, and nothing else may reach this port",
            settings.bind or "every interface",
        )
        return None
    raise ConfigError(
        f"refusing to serve the operator API in plain HTTP on {settings.bind or '*'}: "
        "passwords and session tokens would cross the network in clear; set tls_cert_file "
        "and tls_key_file (KEYVAULT_CP_TLS_CERT_FILE/KEYVAULT_CP_TLS_KEY_FILE; "
        "`keyvault control-plane init --tls-dir DIR` makes them), bind 127.0.0.1, or set "
        "tls_proxy (KEYVAULT_CP_TLS_PROXY=true) behind a TLS-terminating proxy"
    )


@dataclass(frozen=True)
class ApiTlsFiles:
    """Where the API's certificate, key and the CA that signed it were written."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    pin: str  # of the API certificate's key, for clients that pin instead of using ca_file


async def issue_api_certificate(cp: ControlPlane, names: list[str]) -> tuple[bytes, bytes, bytes]:
    """``(cert_pem, key_pem, service_ca_pem)``: a server certificate for ``names`` from the
    deployment's service CA, for :func:`write_api_tls`."""
    if not names:
        raise ConfigError("the API certificate needs at least one name (--api-name)")
    service = await cp.vaults.cas.service()
    cert, key = service.issue_server_cert(
        names, ip_addresses=(), valid_for=API_CERT_LIFETIME, clock=cp.clock
    )
    return cert, key, service.cert_pem()


def write_api_tls(folder: Path, issued: tuple[bytes, bytes, bytes]) -> ApiTlsFiles:
    """Write what :func:`issue_api_certificate` gave: the key 0600 in a 0700 folder; ``ca.crt``
    is the service CA that clients trust."""
    cert, key, ca = issued
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return ApiTlsFiles(
        cert_file=write_pem(folder / CERT_NAME, cert),
        key_file=write_pem(folder / KEY_NAME, key, private=True),
        ca_file=write_pem(folder / CA_NAME, ca),
        pin=spki_pin(cert),
    )


def existing_files(folder: Path) -> ApiTlsFiles | None:
    """The files a previous :func:`issue_api_certificate` left in ``folder``, or None."""
    cert, key, ca = folder / CERT_NAME, folder / KEY_NAME, folder / CA_NAME
    if not (cert.is_file() and key.is_file() and ca.is_file()):
        return None
    return ApiTlsFiles(cert, key, ca, spki_pin(cert.read_bytes()))
