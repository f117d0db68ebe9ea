"""control_plane/outbound.py: fetches of admin-supplied URLs refuse internal addresses (SSRF).

Unit tests check each refused address class with literals and with a stubbed resolver; the
rest use real local HTTP servers and the system resolver (``localhost``): a redirect to an
internal address, the size cap, the time cap, and the connection going to the checked address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.errors import UnavailableError
from control_plane.errors import OutboundRefused
from control_plane.outbound import OutboundPolicy, address_class, check_url, fetch

LOOPBACK = OutboundPolicy(
    allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),), allow_plain_http=True
)


def stub(*answers: str) -> Any:
    """A resolver that gives ``answers`` for any host and counts its calls."""

    async def resolve(host: str, port: int) -> list[str]:
        resolve.calls += 1  # type: ignore[attr-defined]
        return list(answers)

    resolve.calls = 0  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "shared (carrier NAT)"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "private"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd12:3456::1", "unique-local"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
        ("::ffff:169.254.169.254", "link-local (IPv4 169.254.169.254 inside IPv6)"),
        ("2002:a00:5::1", "private (IPv4 10.0.0.5 inside IPv6)"),  # 6to4 of 10.0.0.5
        ("64:ff9b::a00:5", "private (IPv4 10.0.0.5 inside IPv6)"),  # NAT64 of 10.0.0.5
    ],
)
async def test_each_internal_literal_is_refused_with_its_class(address: str, why: str) -> None:
    ip = ipaddress.ip_address(address)
    assert address_class(ip) == why
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(OutboundRefused) as refused:
        await check_url(f"https://{host}/.well-known/openid-configuration", OutboundPolicy())
    assert f"resolves to {ip}, " in refused.value.message and why in refused.value.message
    assert "`sso.allowed_networks`" in refused.value.message


@pytest.mark.parametrize("address", ["9.9.9.9", "2620:fe::fe", "::ffff:9.9.9.9"])
async def test_public_addresses_pass(address: str) -> None:
    assert address_class(ipaddress.ip_address(address)) is None
    host = f"[{address}]" if ":" in address else address
    assert (await check_url(f"https://{host}/", OutboundPolicy()))[1] == ipaddress.ip_address(
        address
    )


async def test_the_message_tells_the_admin_how_to_allow_an_internal_provider() -> None:
    policy = OutboundPolicy(resolver=stub("10.0.0.5"))
    with pytest.raises(OutboundRefused) as refused:
        await check_url("https://idp.corp.example/", policy, "the issuer URL")
    assert refused.value.message == (
        "the issuer URL resolves to 10.0.0.5, a private address; allow it with "
        "`sso.allowed_networks` if this provider is internal"
    )
    allowed = OutboundPolicy(
        allowed_networks=(ipaddress.ip_network("10.0.0.0/8"),), resolver=stub("10.0.0.5")
    )
    assert (await check_url("https://idp.corp.example/", allowed))[1] == ipaddress.ip_address(
        "10.0.0.5"
    )


async def test_a_name_resolving_to_loopback_is_refused_stubbed_resolver() -> None:
    with pytest.raises(
        OutboundRefused, match=re.escape("resolves to 127.0.0.1, a loopback address")
    ):
        await check_url("https://provider.test/", OutboundPolicy(resolver=stub("127.0.0.1")))
    with pytest.raises(OutboundRefused, match="resolves to ::1, a loopback address"):
        await check_url("https://provider.test/", OutboundPolicy(resolver=stub("::1")))


async def test_one_internal_answer_among_public_ones_is_enough_to_refuse() -> None:
    policy = OutboundPolicy(resolver=stub("9.9.9.9", "169.254.169.254"))
    with pytest.raises(OutboundRefused, match=re.escape("169.254.169.254, a link-local address")):
        await check_url("https://provider.test/", policy)


async def test_a_name_resolving_to_loopback_is_refused_real_resolver() -> None:
    with pytest.raises(OutboundRefused, match=r"resolves to (127\.0\.0\.1|::1), a loopback"):
        await fetch("https://localhost:9/.well-known/openid-configuration", OutboundPolicy())


async def test_scheme_and_credentials_are_checked() -> None:
    for url in ("ftp://9.9.9.9/", "file:///etc/passwd", "https:///nohost", "gopher://x/"):
        with pytest.raises(OutboundRefused, match="must be an https:// URL"):
            await check_url(url, OutboundPolicy())
    with pytest.raises(OutboundRefused, match="must not carry a user name or password"):
        await check_url("https://user:pw@9.9.9.9/", OutboundPolicy())
    with pytest.raises(OutboundRefused, match="must use https://"):
        await check_url("http://9.9.9.9/", OutboundPolicy(allow_plain_http=True))
    with pytest.raises(OutboundRefused, match="must use https://"):  # the flag is off
        await check_url(
            "http://127.0.0.1/", OutboundPolicy(allowed_networks=LOOPBACK.allowed_networks)
        )


async def test_an_unresolvable_host_is_unavailable_not_a_crash() -> None:
    async def broken(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(UnavailableError, match="cannot be resolved"):
        await check_url("https://nowhere.test/", OutboundPolicy(resolver=broken))


async def serve(aiohttp_server: Any, routes: dict[str, Any]) -> str:
    """A real HTTP server on 127.0.0.1 with ``routes``; its base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    return f"http://127.0.0.1:{server.port}"


async def test_a_redirect_to_an_internal_address_is_refused(aiohttp_server: Any) -> None:
    async def to_metadata(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def to_redis(_: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("https://[::ffff:10.0.0.5]:6379/")

    async def doc(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    base = await serve(aiohttp_server, {"/meta": to_metadata, "/redis": to_redis, "/doc": doc})
    with pytest.raises(OutboundRefused) as refused:
        await fetch(f"{base}/meta", LOOPBACK, "the issuer URL")
    assert "169.254.169.254, a link-local address" in refused.value.message
    assert "redirect" in refused.value.message
    with pytest.raises(OutboundRefused, match=r"a private \(IPv4 10\.0\.0\.5 inside IPv6\)"):
        await fetch(f"{base}/redis", LOOPBACK)
    assert (await fetch(f"{base}/doc", LOOPBACK)).json() == {"ok": True}  # the allow-list


async def test_the_loopback_server_is_refused_without_the_allow_list(
    aiohttp_server: Any,
) -> None:
    async def doc(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    base = await serve(aiohttp_server, {"/doc": doc})
    with pytest.raises(OutboundRefused, match=re.escape("127.0.0.1, a loopback address")):
        await fetch(f"{base}/doc", OutboundPolicy(allow_plain_http=True))


async def test_the_connection_goes_to_the_checked_address(aiohttp_server: Any) -> None:
    """The name is resolved once, and the connection uses that answer: ``provider.test``
    exists in no DNS, so only the pinned address can have reached the server."""

    async def doc(request: web.Request) -> web.Response:
        return web.json_response({"host": request.host})

    base = await serve(aiohttp_server, {"/doc": doc})
    port = base.rsplit(":", 1)[1]
    resolver = stub("127.0.0.1")
    policy = OutboundPolicy(
        allowed_networks=LOOPBACK.allowed_networks, allow_plain_http=True, resolver=resolver
    )
    got = await fetch(f"http://provider.test:{port}/doc", policy)
    assert got.json() == {"host": f"provider.test:{port}"}
    assert resolver.calls == 1


async def test_answers_are_capped_in_size_and_time(aiohttp_server: Any) -> None:
    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * (300 * 1024), content_type="application/json")

    async def chunked(_: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(_)
        for _i in range(40):
            await resp.write(b"y" * 8192)
        await resp.write_eof()
        return resp

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    base = await serve(aiohttp_server, {"/big": big, "/chunked": chunked, "/slow": slow})
    with pytest.raises(OutboundRefused, match="larger than 262144 bytes"):
        await fetch(f"{base}/big", LOOPBACK)
    with pytest.raises(OutboundRefused, match="larger than 262144 bytes"):
        await fetch(f"{base}/chunked", LOOPBACK)
    quick = OutboundPolicy(
        allowed_networks=LOOPBACK.allowed_networks, allow_plain_http=True, timeout=0.5
    )
    with pytest.raises(UnavailableError, match=re.escape("did not answer within 0.5 s")):
        await fetch(f"{base}/slow", quick)


async def test_redirects_are_bounded(aiohttp_server: Any) -> None:
    async def loop(_: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    base = await serve(aiohttp_server, {"/loop": loop})
    with pytest.raises(OutboundRefused, match="more than 3 redirects"):
        await fetch(f"{base}/loop", LOOPBACK)


def tls_pair(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A test CA and a server certificate for DNS ``name``: (server context, client context
    trusting only that CA)."""
    now = datetime.now(UTC)

    def cert(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = cert("outbound test CA", ca_key, "outbound test CA", ca_key, True)
    leaf = cert(name, leaf_key, "outbound test CA", ca_key, False)
    pem = serialization.Encoding.PEM
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (tmp_path / "leaf.key").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    client = ssl.create_default_context(cadata=ca.public_bytes(pem).decode())
    return server, client


async def test_https_to_the_pinned_address_still_checks_the_host_name(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """Connecting to the checked address does not weaken TLS: the certificate must name the
    URL's host (``provider.test``, which no DNS knows), not the address."""

    async def doc(_: web.Request) -> web.Response:
        return web.json_response({"issuer": "https://provider.test"})

    app = web.Application()
    app.router.add_get("/doc", doc)
    server_ctx, client_ctx = tls_pair(tmp_path, "provider.test")
    server = await aiohttp_server(app, host="127.0.0.1", ssl=server_ctx)
    policy = OutboundPolicy(
        allowed_networks=LOOPBACK.allowed_networks, resolver=stub("127.0.0.1"), tls=client_ctx
    )
    got = await fetch(f"https://provider.test:{server.port}/doc", policy)
    assert got.json() == {"issuer": "https://provider.test"}
    with pytest.raises(UnavailableError, match=r"certificate|hostname"):
        await fetch(f"https://impostor.test:{server.port}/doc", policy)
