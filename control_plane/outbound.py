"""Server-side fetches of URLs an organisation's admin supplied, safe from SSRF.

Every fetch the control plane makes of such a URL (the SSO provider's discovery document and
its JWKS) goes through :func:`fetch`:

* ``https://`` only; plain ``http://`` only to a loopback address, and only when the policy
  says so (``sso.allow_plain_http``: tests and development);
* the host is resolved **once**; every address it resolves to must be public: not loopback,
  private, unique-local, link-local, multicast, reserved, unspecified or shared, nor such an
  IPv4 address inside IPv6 (mapped, 6to4, Teredo, NAT64), unless an allowed network of the
  policy (``sso.allowed_networks``) contains it;
* the connection goes to that checked address (a resolver pinned to it), so a second DNS
  answer (rebinding) cannot move it; TLS still checks the certificate against the host name;
* redirects are followed at most ``max_redirects`` times, each hop checked the same way;
* the answer is capped at ``max_bytes`` and the whole fetch at ``timeout`` seconds.

The alert webhook (``webhook_url``) is not such a URL: it comes from the deployment's own
settings, which only whoever runs the control plane can change, not from an organisation.

A refusal is an :class:`~control_plane.errors.OutboundRefused` naming the address and the
setting that would allow it; a provider that cannot be reached is an ``UnavailableError``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from common.errors import UnavailableError
from control_plane.errors import OutboundRefused

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

REDIRECTS = frozenset({301, 302, 303, 307, 308})
NAT64 = ipaddress.ip_network("64:ff9b::/96")
SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for ``host`` (each once, in its order)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses a fetch may reach, and how much it may read for how long."""

    allowed_networks: Sequence[Network] = ()
    allow_plain_http: bool = False
    max_bytes: int = 256 * 1024
    timeout: float = 10.0
    max_redirects: int = 3
    setting: str = "sso.allowed_networks"  # named in refusals: where to allow an address
    resolver: Resolver = system_resolver
    tls: ssl.SSLContext | None = None  # None: the system's trusted CAs (tests bring their own)


@dataclass(frozen=True)
class Fetched:
    """A fetched answer: its HTTP status and (capped) body."""

    url: str
    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON (ValueError when it is not)."""
        return json.loads(self.body)


def _embedded_v4(ip: IP) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo client, NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_class(ip: IP) -> str | None:
    """Why ``ip`` is not a public address (``"loopback"``, ``"private"``, …), or None."""
    inner = _embedded_v4(ip)
    if inner is not None:
        why = address_class(inner)
        return f"{why} (IPv4 {inner} inside IPv6)" if why else None
    checks: list[tuple[bool, str]] = [
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv6Address) and ip in UNIQUE_LOCAL, "unique-local"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in SHARED, "shared (carrier NAT)"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "non-public"),
    ]
    return next((why for hit, why in checks if hit), None)


def _allowed(ip: IP, networks: Sequence[Network]) -> bool:
    forms = [ip, *filter(None, [_embedded_v4(ip)])]
    return any(f.version == n.version and f in n for f in forms for n in networks)


def check_address(ip: IP, policy: OutboundPolicy, what: str) -> None:
    """OutboundRefused unless ``ip`` is public or inside an allowed network."""
    if _allowed(ip, policy.allowed_networks):
        return
    why = address_class(ip)
    if why is not None:
        article = "an" if why.startswith("unspecified") else "a"
        raise OutboundRefused(
            f"{what} resolves to {ip}, {article} {why} address; allow it with "
            f"`{policy.setting}` if this provider is internal"
        )


async def check_url(url: str, policy: OutboundPolicy, what: str = "the URL") -> tuple[str, IP]:
    """Check ``url`` and resolve its host once: (host, the checked address to connect to)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise OutboundRefused(f"{what} {url!r} is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise OutboundRefused(f"{what} {url!r} must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise OutboundRefused(f"{what} must not carry a user name or password")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = await _resolve(host, port, policy, what)
    for ip in addresses:  # every answer: a mixed answer must not pass on its public half
        check_address(ip, policy, what)
    if parts.scheme == "http" and not (policy.allow_plain_http and addresses[0].is_loopback):
        raise OutboundRefused(
            f"{what} {url!r} must use https:// (plain http:// is allowed only to a loopback "
            "address, with `sso.allow_plain_http`, for tests and development)"
        )
    return host, addresses[0]


async def _resolve(host: str, port: int, policy: OutboundPolicy, what: str) -> list[IP]:
    """The addresses of ``host`` (a literal is its own), resolved once."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        async with asyncio.timeout(policy.timeout):
            found = await policy.resolver(host, port)
        addresses: list[IP] = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        raise UnavailableError(f"{what}: the host {host} cannot be resolved ({reason})") from None
    if not addresses:
        raise UnavailableError(f"{what}: the host {host} has no address")
    return addresses


class _Pinned(AbstractResolver):
    """A resolver that answers every lookup with the one address already checked."""

    def __init__(self, ip: IP) -> None:
        self.ip = ip

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        fam = socket.AF_INET6 if self.ip.version == 6 else socket.AF_INET
        return [
            ResolveResult(
                hostname=host,
                host=str(self.ip),
                port=port,
                family=fam,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


async def _get_once(url: str, ip: IP, policy: OutboundPolicy) -> tuple[int, str | None, bytes]:
    """One GET to the checked address: (status, Location, body up to the cap)."""
    connector = aiohttp.TCPConnector(resolver=_Pinned(ip), use_dns_cache=False)
    async with (
        aiohttp.ClientSession(connector=connector, trust_env=False) as session,
        session.get(
            url,
            allow_redirects=False,
            headers={"Accept": "application/json"},
            ssl=policy.tls if policy.tls is not None else True,
        ) as resp,
    ):
        limit = policy.max_bytes
        if (resp.content_length or 0) > limit:
            raise OutboundRefused(f"the answer of {url} is larger than {limit} bytes")
        body = bytearray()
        async for chunk in resp.content.iter_chunked(65536):
            body += chunk
            if len(body) > limit:
                raise OutboundRefused(f"the answer of {url} is larger than {limit} bytes")
        return resp.status, resp.headers.get("Location"), bytes(body)


async def fetch(url: str, policy: OutboundPolicy, what: str = "the URL") -> Fetched:
    """GET ``url`` under ``policy`` (see the module docstring); the final answer."""
    try:
        async with asyncio.timeout(policy.timeout):
            for _ in range(policy.max_redirects + 1):
                _host, ip = await check_url(url, policy, what)
                status, location, body = await _get_once(url, ip, policy)
                if status not in REDIRECTS or not location:
                    return Fetched(url, status, body)
                url = urljoin(url, location)
                what = f"a redirect (to {url})"
    except TimeoutError:
        raise UnavailableError(f"{what} did not answer within {policy.timeout:g} s") from None
    except aiohttp.ClientError as exc:
        reason = str(exc) or type(exc).__name__
        raise UnavailableError(f"{what} cannot be read: {reason}") from None
    raise OutboundRefused(f"{what}: more than {policy.max_redirects} redirects")
