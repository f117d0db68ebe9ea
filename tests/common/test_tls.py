"""Tests for common.tls: real TLS 1.3 sockets against an aiohttp server, no mocks."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import ssl
import stat
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import ConfigError, IntegrityError, ValidationError
from common.pki import (
    CertificateAuthority,
    cert_common_name,
    cert_not_after,
    cert_serial,
    load_private_key,
    make_csr,
    private_key_pem,
    spki_pin,
    verify_pin,
)
from common.tls import PinMismatchError, TLSError, client_context, server_context, write_pem

REFUSED = (
    ssl.SSLError,
    httpx.ConnectError,
    httpx.ReadError,
    httpx.RemoteProtocolError,
    ConnectionResetError,
    BrokenPipeError,
)


# --------------------------------------------------------------------------- fixtures


@dataclass
class Pki:
    """One CA with a server certificate and a client certificate, written to a folder."""

    ca: CertificateAuthority
    dir: Path
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def write_client(self, name: str, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
        cert = write_pem(self.dir / f"{name}.crt", cert_pem)
        key = write_pem(self.dir / f"{name}.key", key_pem, private=True)
        return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create("KeyVault Test CA")
    server_cert, server_key = ca.issue_server_cert(["localhost"])
    client_cert, client_key = ca.issue_client_cert("agent-1")
    return Pki(
        ca=ca,
        dir=folder,
        ca_file=write_pem(folder / "ca.crt", ca.cert_pem()),
        server_cert=write_pem(folder / "server.crt", server_cert),
        server_key=write_pem(folder / "server.key", server_key, private=True),
        client_cert=write_pem(folder / "client.crt", client_cert),
        client_key=write_pem(folder / "client.key", client_key, private=True),
    )


async def _hello(request: web.Request) -> web.Response:
    peer = request.transport.get_extra_info("peercert") if request.transport else None
    common_name = None
    if peer:
        for rdn in peer.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    common_name = value
    return web.json_response({"peer_cn": common_name})


ServeFn = Callable[[ssl.SSLContext], Coroutine[Any, Any, str]]


@pytest.fixture
async def serve() -> AsyncIterator[ServeFn]:
    """Start an aiohttp app on 127.0.0.1 with a given SSL context; yields its base URL."""
    runners: list[web.AppRunner] = []

    async def start(ctx: ssl.SSLContext) -> str:
        app = web.Application()
        app.router.add_get("/", _hello)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"https://127.0.0.1:{port}/"

    yield start
    for runner in runners:
        await runner.cleanup()


async def _get(url: str, ctx: ssl.SSLContext) -> httpx.Response:
    async with httpx.AsyncClient(verify=ctx, timeout=5) as client:
        return await client.get(url)


async def _refused(url: str, ctx: ssl.SSLContext) -> None:
    """The request must fail at the TLS layer; a 200 must never come back."""
    response: httpx.Response | None = None
    with pytest.raises(REFUSED):
        response = await _get(url, ctx)
    assert response is None


# --------------------------------------------------------------------------- live TLS


def _raw_handshake(port: int, ctx: ssl.SSLContext) -> str | None:
    """A blocking TLS handshake with a raw socket; returns the negotiated version."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            return tls.version()


async def test_tls12_only_client_is_refused(pki: Pki, serve: ServeFn) -> None:
    url = await serve(server_context(pki.server_cert, pki.server_key))
    port = int(url.rsplit(":", 1)[1].strip("/"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=pki.ca_file)
    # Control: the same raw client, TLS 1.3 allowed, gets through.
    assert await asyncio.to_thread(_raw_handshake, port, ctx) == "TLSv1.3"
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(_raw_handshake, port, ctx)
    await _refused(url, ctx)


async def test_server_context_is_tls13_only(pki: Pki) -> None:
    ctx = server_context(pki.server_cert, pki.server_key)
    assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_NONE
    client = client_context(pki.ca_file)
    assert client.minimum_version == client.maximum_version == ssl.TLSVersion.TLSv1_3
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname


async def test_mutual_tls_with_valid_client_cert(pki: Pki, serve: ServeFn) -> None:
    url = await serve(
        server_context(
            pki.server_cert, pki.server_key, client_ca_file=pki.ca_file, require_client_cert=True
        )
    )
    ctx = client_context(pki.ca_file, cert_file=pki.client_cert, key_file=pki.client_key)
    response = await _get(url, ctx)
    assert response.status_code == 200
    assert response.json() == {"peer_cn": "agent-1"}
    assert response.extensions["network_stream"].get_extra_info("ssl_object").version() == (
        "TLSv1.3"
    )


async def test_client_context_from_pem_text(pki: Pki, serve: ServeFn) -> None:
    url = await serve(server_context(pki.server_cert, pki.server_key))
    response = await _get(url, client_context(ca_pem=pki.ca.cert_pem().decode()))
    assert response.status_code == 200
    assert response.json() == {"peer_cn": None}


async def test_client_refuses_server_from_another_ca(pki: Pki, serve: ServeFn) -> None:
    url = await serve(server_context(pki.server_cert, pki.server_key))
    other = CertificateAuthority.create("Other CA")
    await _refused(url, client_context(ca_pem=other.cert_pem().decode()))


async def test_required_client_cert_missing_is_refused(pki: Pki, serve: ServeFn) -> None:
    url = await serve(
        server_context(
            pki.server_cert, pki.server_key, client_ca_file=pki.ca_file, require_client_cert=True
        )
    )
    await _refused(url, client_context(pki.ca_file))


async def test_required_client_cert_from_foreign_ca_is_refused(pki: Pki, serve: ServeFn) -> None:
    url = await serve(
        server_context(
            pki.server_cert, pki.server_key, client_ca_file=pki.ca_file, require_client_cert=True
        )
    )
    foreign = CertificateAuthority.create("Foreign CA")
    cert, key = pki.write_client("foreign", *foreign.issue_client_cert("agent-1"))
    await _refused(url, client_context(pki.ca_file, cert_file=cert, key_file=key))


async def test_required_client_cert_expired_is_refused(pki: Pki, serve: ServeFn) -> None:
    url = await serve(
        server_context(
            pki.server_cert, pki.server_key, client_ca_file=pki.ca_file, require_client_cert=True
        )
    )
    past = datetime.now(UTC) - timedelta(days=2)
    cert_pem, key_pem = pki.ca.issue_client_cert(
        "agent-1", not_before=past, valid_for=timedelta(days=1)
    )
    assert cert_not_after(cert_pem) < datetime.now(UTC)
    cert, key = pki.write_client("expired", cert_pem, key_pem)
    await _refused(url, client_context(pki.ca_file, cert_file=cert, key_file=key))


async def test_optional_client_cert_mode(pki: Pki, serve: ServeFn) -> None:
    url = await serve(server_context(pki.server_cert, pki.server_key, client_ca_file=pki.ca_file))
    anonymous = await _get(url, client_context(pki.ca_file))
    assert anonymous.status_code == 200
    assert anonymous.json() == {"peer_cn": None}
    with_cert = await _get(
        url, client_context(pki.ca_file, cert_file=pki.client_cert, key_file=pki.client_key)
    )
    assert with_cert.json() == {"peer_cn": "agent-1"}
    foreign = CertificateAuthority.create("Foreign CA")
    cert, key = pki.write_client("foreign-opt", *foreign.issue_client_cert("agent-1"))
    await _refused(url, client_context(pki.ca_file, cert_file=cert, key_file=key))


async def test_server_cert_via_sign_csr_serves_tls(pki: Pki, serve: ServeFn) -> None:
    csr_pem, key_pem = make_csr("ignored")
    cert_pem = pki.ca.sign_csr(csr_pem, common_name="127.0.0.1", client=False)
    cert, key = pki.write_client("csr-server", cert_pem, key_pem)
    url = await serve(server_context(cert, key))
    assert (await _get(url, client_context(pki.ca_file))).status_code == 200


async def test_intermediate_chain_verifies_strictly_over_mutual_tls(
    pki: Pki, serve: ServeFn
) -> None:
    """Trust only the root; the client presents leaf + intermediate (VERIFY_X509_STRICT)."""
    intermediate = CertificateAuthority.create("Org CA", parent=pki.ca)
    url = await serve(
        server_context(
            pki.server_cert, pki.server_key, client_ca_file=pki.ca_file, require_client_cert=True
        )
    )
    leaf, key = intermediate.issue_client_cert("vlt_agent")
    cert, key_file = pki.write_client("chained", leaf + intermediate.cert_pem(), key)
    response = await _get(url, client_context(pki.ca_file, cert_file=cert, key_file=key_file))
    assert response.json() == {"peer_cn": "vlt_agent"}
    # without the intermediate in the chain the root alone cannot vouch for the leaf
    alone, key_alone = pki.write_client("unchained", leaf, key)
    await _refused(url, client_context(pki.ca_file, cert_file=alone, key_file=key_alone))


def test_intermediate_ca_shape() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    root = CertificateAuthority.create("Root", valid_for=timedelta(days=30), clock=lambda: now)
    child = CertificateAuthority.create(
        "Child", parent=root, valid_for=timedelta(days=365), clock=lambda: now
    )
    cert = child.cert
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert cert.issuer == root.cert.subject and cert.subject != cert.issuer
    cert.verify_directly_issued_by(root.cert)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.not_valid_after_utc == root.cert.not_valid_after_utc  # never outlives its parent
    assert child.pin() != root.pin()
    # an intermediate (path length 0) signs leaves, never further CAs
    with pytest.raises(ValidationError, match="path length"):
        CertificateAuthority.create("Grandchild", parent=child)
    # it round-trips through an encrypted PEM key like a root
    loaded = CertificateAuthority.load(child.cert_pem(), child.key_pem(b"pw"), b"pw")
    assert loaded.pin() == child.pin()
    later = now + timedelta(days=31)
    with pytest.raises(TLSError, match="expired"):
        CertificateAuthority.create("Late", parent=root, clock=lambda: later)


# --------------------------------------------------------------------------- pins


def test_spki_pin_is_stable_across_encodings(pki: Pki) -> None:
    pem = pki.ca.cert_pem()
    der = pki.ca.cert.public_bytes(serialization.Encoding.DER)
    pin = pki.ca.pin()
    assert pin.startswith("sha256:") and len(pin) == len("sha256:") + 64
    assert spki_pin(pki.ca.cert) == spki_pin(pem) == spki_pin(pem.decode()) == spki_pin(der) == pin
    # The pin is of the key, not the certificate: a re-issued leaf has its own pin.
    leaf_pem = pki.server_cert.read_bytes()
    assert spki_pin(leaf_pem) != pin


def test_verify_pin(pki: Pki) -> None:
    verify_pin(pki.ca.cert_pem(), pki.ca.pin())
    verify_pin(pki.ca.cert, pki.ca.pin().upper().replace("SHA256:", "sha256:"))
    other = CertificateAuthority.create("Other CA")
    with pytest.raises(PinMismatchError) as info:
        verify_pin(pki.ca.cert, other.pin())
    assert isinstance(info.value, TLSError)
    assert info.value.code == "pin_mismatch"
    assert "does not match the pin" in info.value.message
    for bad in ("", "sha256:abc", "md5:" + "0" * 64, "sha256:" + "g" * 64, other.pin() + "\n"):
        with pytest.raises(ValidationError):
            verify_pin(pki.ca.cert, bad)


def test_spki_pin_rejects_garbage() -> None:
    with pytest.raises(ValidationError):
        spki_pin(b"not a certificate")


# --------------------------------------------------------------------------- CA


def test_ca_certificate_shape() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    ca = CertificateAuthority.create("Shape CA", valid_for=timedelta(days=10), clock=lambda: now)
    cert = ca.cert
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert constraints.value.path_length == 1  # a root may sign intermediates
    assert cert.not_valid_after_utc == now + timedelta(days=10)
    assert cert.subject == cert.issuer
    text = repr(ca)
    assert "Shape CA" in text and "PRIVATE" not in text and "key=" not in text


def test_server_cert_has_san_and_server_auth(pki: Pki) -> None:
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    cert.verify_directly_issued_by(pki.ca.cert)


def test_sign_csr_uses_ca_chosen_name_and_client_auth(pki: Pki) -> None:
    now = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)
    csr_pem, _ = make_csr("admin")
    cert_pem = pki.ca.sign_csr(
        csr_pem,
        common_name="agent-7",
        valid_for=timedelta(hours=6),
        serial=12345,
        clock=lambda: now,
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert_common_name(cert_pem) == "agent-7"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "agent-7"
    assert cert_serial(cert_pem) == 12345
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_before_utc == now - timedelta(minutes=1)
    assert cert_not_after(cert_pem) == now + timedelta(hours=6)
    cert.verify_directly_issued_by(pki.ca.cert)


def test_sign_csr_defaults(pki: Pki) -> None:
    start = datetime(2031, 1, 1, tzinfo=UTC)
    csr_pem, _ = make_csr("agent-9")
    cert_pem = pki.ca.sign_csr(csr_pem, not_before=start, valid_for=timedelta(hours=2))
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert_common_name(cert_pem) == "agent-9"
    assert cert.not_valid_before_utc == start
    assert cert.not_valid_after_utc == start + timedelta(hours=2)
    assert 0 < cert.serial_number < 2**159
    other = x509.load_pem_x509_certificate(pki.ca.sign_csr(csr_pem))
    assert other.serial_number != cert.serial_number


def test_sign_csr_ignores_requested_extensions(pki: Pki) -> None:
    key = load_private_key(make_csr("x")[1])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evil")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("control-plane.example")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = pki.ca.sign_csr(csr.public_bytes(serialization.Encoding.PEM), common_name="ok")
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_sign_csr_rejects_tampered_csr(pki: Pki) -> None:
    csr_pem, _ = make_csr("agent-1")
    der = bytearray(x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER))
    index = der.find(b"agent-1")
    der[index : index + 7] = b"admin-1"
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(ValidationError, match="signature is invalid"):
        pki.ca.sign_csr(tampered)
    with pytest.raises(ValidationError):
        pki.ca.sign_csr(b"garbage")


def test_ca_key_round_trip_and_wrong_password(pki: Pki) -> None:
    key_pem = pki.ca.key_pem(b"correct horse")
    assert b"ENCRYPTED" in key_pem
    loaded = CertificateAuthority.load(pki.ca.cert_pem(), key_pem, b"correct horse")
    assert loaded.pin() == pki.ca.pin()
    # The loaded CA can sign, and its signatures verify against the original certificate.
    cert_pem, _ = loaded.issue_client_cert("agent-2")
    x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(pki.ca.cert)
    with pytest.raises(IntegrityError):
        CertificateAuthority.load(pki.ca.cert_pem(), key_pem, b"wrong horse")
    with pytest.raises(IntegrityError):
        CertificateAuthority.load(pki.ca.cert_pem(), key_pem)
    with pytest.raises(IntegrityError):
        load_private_key(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    other = CertificateAuthority.create("Other CA")
    with pytest.raises(IntegrityError):
        CertificateAuthority.load(pki.ca.cert_pem(), other.key_pem())
    plain = CertificateAuthority.load(pki.ca.cert_pem(), pki.ca.key_pem())
    assert plain.pin() == pki.ca.pin()
    assert private_key_pem(plain.key).startswith(b"-----BEGIN PRIVATE KEY-----")


def test_build_crl_lists_revoked_serials(pki: Pki) -> None:
    now = datetime(2031, 3, 1, tzinfo=UTC)
    revoked_at = now - timedelta(hours=3)
    pem = pki.ca.build_crl(
        [(1001, revoked_at), (2002, revoked_at)],
        next_update_in=timedelta(minutes=30),
        clock=lambda: now,
    )
    crl = x509.load_pem_x509_crl(pem)
    assert {entry.serial_number for entry in crl} == {1001, 2002}
    assert crl.get_revoked_certificate_by_serial_number(1001) is not None
    assert crl.get_revoked_certificate_by_serial_number(3003) is None
    assert crl.last_update_utc == now
    assert crl.next_update_utc == now + timedelta(minutes=30)
    assert crl.is_signature_valid(pki.ca.cert.public_key())  # type: ignore[arg-type]
    assert crl.issuer == pki.ca.cert.subject


def test_leaf_never_outlives_ca() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    ca = CertificateAuthority.create("Short CA", valid_for=timedelta(hours=1), clock=lambda: now)
    cert_pem, _ = ca.issue_client_cert("a", valid_for=timedelta(days=5), clock=lambda: now)
    assert cert_not_after(cert_pem) == ca.cert.not_valid_after_utc
    later = now + timedelta(hours=2)
    with pytest.raises(TLSError, match="expired"):
        ca.issue_client_cert("a", clock=lambda: later)


# --------------------------------------------------------------------------- config errors


def test_server_context_missing_file_names_it(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        server_context(missing, pki.server_key)
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        server_context(pki.server_cert, pki.server_key, client_ca_file=missing)
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        client_context(missing)
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        client_context(pki.ca_file, cert_file=missing, key_file=pki.client_key)


def test_server_context_config_errors(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="client_ca_file"):
        server_context(pki.server_cert, pki.server_key, require_client_cert=True)
    with pytest.raises(ConfigError, match="does not belong"):
        server_context(pki.server_cert, pki.client_key)
    junk = write_pem(tmp_path / "junk.pem", b"not pem")
    with pytest.raises(ConfigError, match=re.escape(str(junk))):
        server_context(junk, pki.server_key)
    with pytest.raises(ConfigError):
        client_context(ca_pem="not pem")


def test_write_pem_is_atomic_and_private(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    write_pem(path, b"one")
    write_pem(path, b"two", private=True)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k.pem"]
