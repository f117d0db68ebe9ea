"""TLS for KeyVault: TLS 1.3-only contexts and mutual TLS, with the standard library only.

* :func:`server_context` and :func:`client_context` build :class:`ssl.SSLContext` objects that
  speak TLS 1.3 and nothing else, optionally with client certificates (mutual TLS). Pass the
  client context to httpx as ``verify=ctx``: httpx silently drops ``cert=(crt, key)`` when
  ``verify`` is a file name.
* Keys, certificate requests, SPKI pins and the small CA live in :mod:`common.pki`, which
  imports ``cryptography.x509``; this module does not, so a process that only serves or dials
  TLS (``keyvault agent run``) never loads it (idle memory, docs/performance.md).

Messages never contain key material.
"""

from __future__ import annotations

import os
import secrets
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.errors import ConfigError, KeyVaultError

Clock = Callable[[], datetime]
StrPath = str | os.PathLike[str]


def utcnow() -> datetime:
    """The default clock: timezone-aware UTC now."""
    return datetime.now(UTC)


# --------------------------------------------------------------------------- errors


class TLSError(KeyVaultError):
    """A TLS setting, certificate or peer cannot be used."""

    code = "tls_error"


class PinMismatchError(TLSError):
    """The peer's CA key is not the one the enrolment token pins."""

    code = "pin_mismatch"

    def __init__(
        self,
        message: str = (
            "the server's CA key does not match the pin in the token; the token may be for "
            "another control plane, or the connection is being intercepted"
        ),
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)


# --------------------------------------------------------------------------- helpers


def _read_check(path: StrPath, what: str) -> str:
    """The path as a string, after checking the file exists and can be read."""
    name = os.fspath(path)
    try:
        with open(name, "rb"):
            pass
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {name} does not exist; check the path in the settings") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{what} {name} is a directory, not a PEM file") from exc
    except OSError as exc:
        raise ConfigError(f"{what} {name} cannot be read: {exc.strerror}") from exc
    return name


def _load_chain(ctx: ssl.SSLContext, cert_file: StrPath, key_file: StrPath | None) -> None:
    cert = _read_check(cert_file, "TLS certificate file")
    key = _read_check(key_file, "TLS private key file") if key_file is not None else None
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(
                f"the private key {key or cert} does not belong to the certificate {cert}"
            ) from exc
        raise ConfigError(
            f"TLS certificate {cert} or private key {key or cert} is not valid "
            "(expected an unencrypted PEM certificate and key)"
        ) from exc


def _tls13_only(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


# --------------------------------------------------------------------------- contexts


def server_context(
    cert_file: StrPath,
    key_file: StrPath,
    *,
    client_ca_file: StrPath | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A TLS 1.3-only server context, optionally asking for client certificates.

    With ``client_ca_file`` clients may present a certificate signed by that CA (and must, when
    ``require_client_cert``). A presented certificate that does not verify is always refused.
    """
    if require_client_cert and client_ca_file is None:
        raise ConfigError(
            "require_client_cert needs client_ca_file: name the CA that signs client certificates"
        )
    ctx = _tls13_only(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load_chain(ctx, cert_file, key_file)
    if client_ca_file is not None:
        ca = _read_check(client_ca_file, "client CA file")
        try:
            ctx.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            raise ConfigError(f"client CA file {ca} does not hold a PEM certificate") from exc
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(
    ca_file: StrPath | None = None,
    *,
    ca_pem: str | bytes | None = None,
    cert_file: StrPath | None = None,
    key_file: StrPath | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A TLS 1.3-only client context that verifies the server against a CA.

    The CA comes from ``ca_file`` and/or ``ca_pem`` (PEM text); with neither, the system's
    default CAs are used. ``cert_file``/``key_file`` add a client certificate for mutual TLS.
    ``check_hostname=False`` still verifies the chain, only not the name.
    """
    if key_file is not None and cert_file is None:
        raise ConfigError("a client key_file was given without its cert_file")
    ctx = _tls13_only(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca_file is not None:
        ca = _read_check(ca_file, "CA file")
        try:
            ctx.load_verify_locations(cafile=ca)
        except ssl.SSLError as exc:
            raise ConfigError(f"CA file {ca} does not hold a PEM certificate") from exc
    if ca_pem is not None:
        text = ca_pem.decode("ascii", "replace") if isinstance(ca_pem, bytes) else ca_pem
        try:
            ctx.load_verify_locations(cadata=text)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError("the CA certificate given as PEM text is not valid PEM") from exc
    if ca_file is None and ca_pem is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert_file is not None:
        _load_chain(ctx, cert_file, key_file)
    return ctx


# --------------------------------------------------------------------------- files


def write_pem(path: StrPath, data: bytes, private: bool = False) -> Path:
    """Write a PEM file atomically (temp file + rename); private files are created 0600."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    mode = 0o600 if private else 0o644
    try:
        binary = getattr(os, "O_BINARY", 0)  # Windows: no newline translation
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | binary, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {target}: {exc.strerror}") from exc
    return target
