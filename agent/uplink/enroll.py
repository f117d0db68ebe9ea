"""``keyvault agent enroll``: join a control plane with a single-use enrollment token.

The steps of ``docs/uplink.md``, in order:

1. parse the token ``kve_<secret>.<64 hex>`` (format only) and take the service CA's pin from it;
2. fetch ``/api/v1/agent/bootstrap`` over TLS 1.3 *without* verification -- the request carries
   no token byte -- and compare the SPKI pin of the CA it returns with the token's pin; a
   mismatch stops here, before any secret is sent;
3. make a P-256 key pair and CSR locally and ``POST /api/v1/vaults/register`` over a context
   that trusts only that CA (hostname checked);
4. store the files (:class:`~agent.uplink.state.UplinkFiles`), ``state.json`` last.

A lost answer is retried with the same CSR (kept in ``pending.*`` until success, also across
runs of the command), which the control plane answers with the same identity.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from agent import platform
from agent.uplink.errors import AlreadyEnrolledError, EnrollmentRefusedError, PinMismatchError
from agent.uplink.state import Enrollment, UplinkFiles, describe, leaf_of, same_key
from agent.uplink.tlsctx import bootstrap_context, pinned_context
from common.errors import (
    AuthenticationError,
    ConfigError,
    KeyVaultError,
    UnavailableError,
    ValidationError,
)
from common.pki import make_csr, spki_pin
from common.uplink import BOOTSTRAP_PATH, REGISTER_PATH, opaque_id

log = logging.getLogger("keyvault.agent.enroll")
TOKEN_RE = re.compile(r"^kve_[A-Za-z0-9_-]{20,64}\.([0-9a-f]{64})$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
REGISTER_ATTEMPTS = 3
TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
MAX_ANSWER = 256 * 1024


@dataclass(frozen=True, repr=False)
class EnrollmentToken:
    """A parsed token; ``repr`` never shows it."""

    text: str
    pin: str

    def __repr__(self) -> str:
        return f"EnrollmentToken(pin={self.pin!r})"


def parse_token(text: str) -> EnrollmentToken:
    """Check the token's format and take its pin; ValidationError (exit 64) otherwise."""
    match = TOKEN_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValidationError(
            "the enrollment token is malformed: it looks like kve_<secret>.<64 hex digits>; "
            "copy it again from the control plane (`Enrollment tokens`)"
        )
    return EnrollmentToken(text.strip(), "sha256:" + match[1])


def check_url(url: str) -> str:
    """The control plane's gateway URL without a trailing slash; only https:// is accepted."""
    parts = urlsplit(url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise ValidationError(
            f"--control-plane {url!r} must be an https:// URL of the control plane's agent "
            "gateway, e.g. https://keyvault.example.com:8444"
        )
    if parts.query or parts.fragment or parts.username:
        raise ValidationError(f"--control-plane {url!r} must not carry a query or credentials")
    return url.strip().rstrip("/")


def default_name() -> str:
    """This host's name, made into a valid vault name."""
    raw = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:100].lstrip("_.-")
    return raw if NAME_RE.match(raw) else "agent"


@dataclass(frozen=True)
class EnrollResult:
    """What enrollment made."""

    vault_id: str
    name: str
    control_plane_url: str
    certificate_not_after: datetime


@contextmanager
def _enroll_lock(files: UplinkFiles) -> Iterator[None]:
    files.ensure()
    fd = os.open(files.path("enroll.lock"), os.O_RDWR | os.O_CREAT | platform.OPEN_FLAGS, 0o600)
    try:
        try:
            platform.lock_file(fd)
        except platform.LockedError:
            raise UnavailableError(
                "another `keyvault agent enroll` is running on this data folder; wait for it"
            ) from None
        yield
    finally:
        os.close(fd)


def enroll(
    data_dir: Path,
    url: str,
    token_text: str,
    *,
    name: str | None = None,
    force: bool = False,
    agent_version: str = "0.1.0",
) -> EnrollResult:
    """Enroll the agent whose data folder is ``data_dir``; see the module docstring.

    Blocking (it runs its own event loop for the two requests): call it from a thread when
    inside one.
    """
    if not data_dir.is_dir():
        raise ConfigError(f"data folder {data_dir} does not exist; run `keyvault agent init` first")
    token = parse_token(token_text)
    url = check_url(url)
    name = name if name is not None else default_name()
    if not NAME_RE.match(name):
        raise ValidationError("--name must be 1-100 characters of A-Z a-z 0-9 _ . - ")
    files = UplinkFiles(data_dir / "uplink")
    with _enroll_lock(files):
        try:
            current = files.load_state()
        except ConfigError:
            if not force:
                raise
            current = None
        if current is not None and not force:
            raise AlreadyEnrolledError(
                f"this data folder is already enrolled as vault {current.vault_id} with "
                f"{current.control_plane_url}; pass --force to replace that identity"
            )
        ca_pem = asyncio.run(fetch_service_ca(url, token.pin))
        pending = files.pending(token.text, url)
        if pending is None:
            csr_pem, key_pem = make_csr(name)
            files.save_pending(token.text, url, csr_pem, key_pem)
        else:
            csr_pem, key_pem = pending
            log.info("retrying an unanswered enrollment with the same certificate request")
        answer = asyncio.run(register(url, ca_pem, token, csr_pem, name, agent_version))
        vault_id, chain = _check_identity(answer, key_pem)
        state = Enrollment(
            vault_id=vault_id,
            control_plane_url=url,
            pin=token.pin,
            enrolled_at=datetime.now(UTC).isoformat(),
            name=str(answer.get("name") or name),
        )
        if force:
            files.forget()
        files.write_enrollment(ca_pem.encode("ascii"), key_pem, chain, state)
        files.clear_pending()
    return EnrollResult(vault_id, state.name, url, describe(leaf_of(chain)).not_after)


# --------------------------------------------------------------------------- the two requests


async def fetch_service_ca(url: str, pin: str) -> str:
    """Step 2: the service CA's PEM, after checking its SPKI pin against the token's."""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        status, doc = await _call(session, "GET", url, BOOTSTRAP_PATH, bootstrap_context())
    if status != 200 or not isinstance(doc.get("ca_certificate"), str):
        raise UnavailableError(
            f"{url} did not answer the bootstrap request like a KeyVault control plane "
            f"(HTTP {status}); check the URL: it is the control plane's agent gateway"
        )
    ca_pem = doc["ca_certificate"]
    try:
        actual = spki_pin(ca_pem)
    except ValidationError:
        raise UnavailableError(f"{url} sent a CA certificate that is not valid PEM") from None
    if not hmac.compare_digest(actual.encode(), pin.lower().encode()):
        raise PinMismatchError(
            f"the control plane at {url} is not the one this token was made for (CA pin "
            "mismatch) — check the URL or ask for a new token"
        )
    return ca_pem


async def register(
    url: str,
    ca_pem: str,
    token: EnrollmentToken,
    csr_pem: bytes,
    name: str,
    agent_version: str,
) -> dict[str, Any]:
    """Step 3: POST the CSR with the token, over TLS trusting only the pinned CA.

    Network failures and 5xx answers are retried with the same CSR; 4xx answers are final.
    """
    body = {
        "token": token.text,
        "csr": csr_pem.decode("ascii"),
        "name": name,
        "agent_version": agent_version,
    }
    ctx = pinned_context(ca_pem)
    last: KeyVaultError | None = None
    for attempt in range(REGISTER_ATTEMPTS):
        if attempt:
            await asyncio.sleep(attempt)
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
                status, doc = await _call(session, "POST", url, REGISTER_PATH, ctx, body)
        except UnavailableError as exc:
            last = exc
            continue
        if status in (200, 201):
            return doc
        error = _refusal(url, status, doc)
        if status < 500:
            raise error
        last = error
    assert last is not None
    raise last


def _refusal(url: str, status: int, doc: dict[str, Any]) -> KeyVaultError:
    """The error a non-2xx registration answer means, with the control plane's own words."""
    found = doc.get("error")
    err: dict[str, Any] = found if isinstance(found, dict) else {}
    code = str(err.get("code", ""))[:64]
    said = _printable(str(err.get("message", "")))
    if status == 401 or code == "enrollment_refused":
        return EnrollmentRefusedError(
            f"the control plane refused the token ({said or 'unknown, used, revoked or expired'})"
            " — enrollment tokens are single-use and short-lived: ask for a new one"
        )
    if status == 429:
        return UnavailableError(f"the control plane at {url} is rate-limiting; try again later")
    if 400 <= status < 500:
        return ValidationError(f"the control plane refused the registration: {said or status}")
    return UnavailableError(
        f"the control plane at {url} failed (HTTP {status}{': ' + said if said else ''}); "
        "try again later"
    )


def _printable(text: str) -> str:
    return "".join(c for c in text if c.isprintable())[:300]


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    path: str,
    ctx: Any,
    body: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """One request; ``(status, JSON object or {})``; transport failures as clear errors."""
    try:
        async with session.request(method, url + path, json=body, ssl=ctx) as resp:
            raw = await resp.content.read(MAX_ANSWER)
            status = resp.status
    except aiohttp.ClientConnectorCertificateError as exc:
        raise AuthenticationError(
            f"the control plane at {url} showed a certificate the pinned CA does not vouch for "
            f"this address ({exc.certificate_error}); use the host name its gateway certificate "
            "names"
        ) from None
    except aiohttp.ClientSSLError as exc:
        raise UnavailableError(
            f"TLS 1.3 handshake with {url} failed ({_os_reason(exc)}); is this the control "
            "plane's agent gateway port?"
        ) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise UnavailableError(
            f"cannot reach the control plane at {url} ({_os_reason(exc)}); check the URL, the "
            "gateway port (default 8444) and the network"
        ) from None
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = {}
    return status, doc if isinstance(doc, dict) else {}


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(getattr(exc, "strerror", None) or exc) or type(exc).__name__
    return _printable(text.splitlines()[0] if text else type(exc).__name__)


def _check_identity(answer: dict[str, Any], key_pem: bytes) -> tuple[str, bytes]:
    """``(vault_id, chain PEM leaf + org CA)`` from the answer, after checking it fits our key."""
    try:
        vault_id = opaque_id(answer.get("vault_id"), "vault_id")
        cert_pem, ca_pem = answer.get("certificate"), answer.get("ca_certificate")
        if not isinstance(cert_pem, str) or not isinstance(ca_pem, str):
            raise ValidationError("the answer lacks certificate or ca_certificate")
        certs = x509.load_pem_x509_certificates(cert_pem.encode("ascii"))
        org_ca = x509.load_pem_x509_certificate(ca_pem.encode("ascii"))
    except (ValidationError, ValueError) as exc:
        raise UnavailableError(
            f"the control plane's registration answer is not usable ({exc}); try again"
        ) from None
    leaf = certs[0]
    try:
        leaf.verify_directly_issued_by(org_ca)
    except (ValueError, TypeError, InvalidSignature):
        raise UnavailableError(
            "the control plane sent a certificate its organisation CA did not sign; try again"
        ) from None
    if not same_key(leaf, key_pem) or describe(leaf).common_name != vault_id:
        raise UnavailableError(
            "the control plane sent a certificate for another key or vault; try again"
        )
    chain = cert_pem.strip() + "\n"
    if len(certs) == 1:
        chain += ca_pem.strip() + "\n"
    assert vault_id is not None
    return vault_id, chain.encode("ascii")
