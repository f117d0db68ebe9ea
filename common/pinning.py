"""TLS client contexts that trust one server key by its pin instead of a CA.

A private deployment may hand operators a *pin* (``sha256:`` + hex of the SHA-256 of the
server certificate's SubjectPublicKeyInfo, as ``curl --pinnedpubkey`` uses) instead of a CA
file. The context below skips CA verification but checks the pin inside the TLS handshake,
before the client can send a byte of application data (a password, a token): the socket and
memory-BIO classes of the context are replaced by subclasses whose ``do_handshake`` compares
the peer's key with the pin. This module is the one place that relies on those hooks.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from common.errors import ValidationError

PIN_RE = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)


def check_pin(pin: str) -> str:
    """The pin lower-cased, or a ValidationError saying what a pin looks like."""
    value = pin.strip().lower() if isinstance(pin, str) else ""
    if not PIN_RE.fullmatch(value):
        raise ValidationError("a pin must look like 'sha256:' followed by 64 hex digits")
    return value


def der_spki_pin(cert_der: bytes) -> str:
    """The pin of a DER certificate's public key."""
    cert = x509.load_der_x509_certificate(cert_der)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


class PinMismatch(ssl.SSLCertVerificationError):
    """The server's key is not the pinned one (raised inside the handshake)."""


def _check_peer(obj: Any, pin: str) -> None:
    der = obj.getpeercert(binary_form=True)
    actual = der_spki_pin(der) if der else ""
    if not hmac.compare_digest(actual.encode(), pin.encode()):
        raise PinMismatch(f"the server's key {actual or '(none)'} does not match the pin {pin}")


def pinned_context(pin: str) -> ssl.SSLContext:
    """A TLS 1.2+ client context that accepts exactly the server key named by ``pin``."""
    expected = check_pin(pin)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the pin below replaces the CA check

    class PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            _check_peer(self, expected)

    class PinnedObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            _check_peer(self, expected)

    ctx.sslsocket_class = PinnedSocket
    ctx.sslobject_class = PinnedObject
    return ctx
