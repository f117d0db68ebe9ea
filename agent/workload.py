"""Workload identity: trade a JWT from a trusted issuer for a short-lived agent token.

``auth.jwt`` in ``agent.yaml`` names the issuers (their ``iss``, audiences and JWKS) and the
roles (which claims a token must hold, and the policy and life of what it gets).
:class:`JwtLogin` checks one login: the role exists; the JWT's algorithm is an asymmetric one
its key declares or implies (never ``none``, never HMAC with a public key); its signature, issuer,
audience, ``exp``/``nbf``/``iat`` (within the issuer's clock skew); then the role's bound
subject and claims. Every refusal is a :class:`JwtLoginError` (401) saying which check failed.

Keys come from a JWKS file or an https URL: at most :data:`MAX_JWKS_BYTES`, fetched within
:data:`FETCH_TIMEOUT_S`, cached, re-read every ``jwks_refresh_s`` and, when a token names an
unknown ``kid``, at most once per :data:`UNKNOWN_KID_REFRESH_S`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import re2

from agent.auth import Policy, Token, TokenService
from agent.settings import JwtIssuer, JwtRole, JwtSettings
from agent.text import is_safe_line
from common.errors import AuthenticationError

if TYPE_CHECKING:
    import jwt

log = logging.getLogger("keyvault.agent.jwt")

MAX_JWKS_BYTES = 64 * 1024
MAX_JWT_BYTES = 16 * 1024
JWS_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$"  # compact JWS, any signature
FETCH_TIMEOUT_S = 5.0
UNKNOWN_KID_REFRESH_S = 30.0
# the algorithms a key type allows (an HMAC algorithm is never accepted: a JWKS holds public keys)
ALGS_BY_KTY = {
    "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "EC": {"ES256", "ES384", "ES512", "ES256K"},
    "OKP": {"EdDSA"},
}
ASYMMETRIC = frozenset().union(*ALGS_BY_KTY.values())


class JwtLoginError(AuthenticationError):
    """A JWT login refused; the message says which check failed."""

    code = "jwt_refused"


@dataclass(frozen=True)
class Login:
    """A successful login: the minted token and who logged in."""

    secret: str
    token: Token
    role: JwtRole
    issuer: JwtIssuer
    subject: str


class Jwks:
    """One issuer's public keys, cached and refreshed."""

    def __init__(self, issuer: JwtIssuer, clock: Any = time.monotonic) -> None:
        self.issuer = issuer
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._loaded_at: float | None = None
        self._kid_refresh_at = -UNKNOWN_KID_REFRESH_S
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK:
        """The key for ``kid`` (or the only key when the token names none)."""
        now = self._clock()
        if self._loaded_at is None or now - self._loaded_at >= self.issuer.jwks_refresh_s:
            await self._refresh()
        found = self._pick(kid)
        if found is None and now - self._kid_refresh_at >= UNKNOWN_KID_REFRESH_S:
            self._kid_refresh_at = now
            await self._refresh()
            found = self._pick(kid)
        if found is None:
            if kid is None:
                raise JwtLoginError(
                    "the JWT names no key id (kid) and the issuer's JWKS holds several keys"
                )
            raise JwtLoginError(
                f"unknown key id (kid) {kid[:64]!r} for issuer {self.issuer.name!r}"
            )
        return found

    def _pick(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    async def _refresh(self) -> None:
        import jwt  # PyJWT (+ its cryptography algorithms, ~1.5 MiB) only once JWT login is used

        async with self._lock:
            try:
                raw = await self._fetch()
                self._keys = parse_jwks(raw)
            except (OSError, ValueError, jwt.PyJWKError) as exc:
                # keep the keys we had; a login needing a key we lack is refused as unknown kid
                log.warning(
                    "issuer %s: could not load its JWKS (%s)", self.issuer.name, type(exc).__name__
                )
            self._loaded_at = self._clock()

    async def _fetch(self) -> bytes:
        if self.issuer.jwks_file is not None:
            path = self.issuer.jwks_file
            raw = await asyncio.to_thread(_read_bounded, path)
            return raw
        assert self.issuer.jwks_url is not None
        import httpx  # only an agent with a JWKS URL loads the HTTP client

        verify: ssl.SSLContext | bool = True
        if self.issuer.jwks_ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self.issuer.jwks_ca_file))
        try:
            async with httpx.AsyncClient(
                timeout=FETCH_TIMEOUT_S, verify=verify, follow_redirects=False
            ) as client:
                async with client.stream("GET", self.issuer.jwks_url) as resp:
                    resp.raise_for_status()
                    body = b""
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_JWKS_BYTES:
                            raise ValueError("JWKS larger than 64 KiB")
                    return body
        except httpx.HTTPError as exc:
            raise OSError(type(exc).__name__) from None


def _read_bounded(path: Any) -> bytes:
    with open(path, "rb") as fh:
        raw: bytes = fh.read(MAX_JWKS_BYTES + 1)
    if len(raw) > MAX_JWKS_BYTES:
        raise ValueError("JWKS larger than 64 KiB")
    return raw


def parse_jwks(raw: bytes) -> dict[str | None, jwt.PyJWK]:
    """The usable public keys of a JWKS document, by kid (symmetric keys are dropped)."""
    import jwt

    doc = json.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("a JWKS is an object with a 'keys' list")
    keys: dict[str | None, jwt.PyJWK] = {}
    for item in doc["keys"]:
        if not isinstance(item, dict) or item.get("kty") not in ALGS_BY_KTY:
            continue  # "oct" (HMAC) keys and unknown types are never used
        if item.get("use", "sig") != "sig":
            continue
        try:
            keys[item.get("kid")] = jwt.PyJWK(item)
        except jwt.PyJWKError:
            continue
    return keys


def _claim_matches(glob: str, value: Any) -> bool:
    body = "".join(".*" if c == "*" else "." if c == "?" else re2.escape(c) for c in glob)
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, bool | int | float):
            item = json.dumps(item)
        if isinstance(item, str) and re2.fullmatch(body, item) is not None:
            return True
    return False


def role_policy(role: JwtRole) -> Policy:
    """The token policy a role grants: one rule per name glob, with its capabilities."""
    by_glob: dict[str, list[str]] = {}
    for cap, names in role.policy.items():
        for glob in names:
            by_glob.setdefault(glob, []).append(cap)
    return Policy.parse([{"path": g, "capabilities": sorted(c)} for g, c in by_glob.items()])


class JwtLogin:
    """Checks JWT logins against ``auth.jwt`` and mints the tokens."""

    def __init__(self, settings: JwtSettings, tokens: TokenService) -> None:
        self.settings = settings
        self.tokens = tokens
        self._issuers = {i.name: i for i in settings.issuers}
        self._roles = {r.name: r for r in settings.roles}
        self._jwks = {i.name: Jwks(i) for i in settings.issuers}

    @property
    def enabled(self) -> bool:
        """Whether any role is configured."""
        return bool(self._roles)

    def role(self, name: str) -> JwtRole:
        """The role a login names, or a refusal."""
        role = self._roles.get(name)
        if role is None:
            raise JwtLoginError(
                f"unknown role {name[:64]!r}: this agent's auth.jwt.roles does not define it"
            )
        return role

    async def verify(self, role: JwtRole, token: str) -> dict[str, Any]:
        """The claims of ``token`` if it passes every check for ``role``; else JwtLoginError."""
        import jwt

        issuer = self._issuers[role.issuer]
        if len(token) > MAX_JWT_BYTES:
            raise JwtLoginError("the JWT is larger than 16 KiB")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise JwtLoginError(
                "malformed JWT: expected a compact JWS (header.payload.sig)"
            ) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise JwtLoginError("unsigned JWT (alg 'none') refused")
        if alg.startswith("HS"):
            raise JwtLoginError(
                f"JWT algorithm {alg} refused: only asymmetric signatures (RS, PS, ES, EdDSA) "
                "made with the issuer's published keys are accepted"
            )
        if alg not in ASYMMETRIC:
            raise JwtLoginError(f"JWT algorithm {alg[:20]!r} is not supported")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise JwtLoginError("malformed JWT: kid must be a string")
        key = await self._jwks[issuer.name].key(kid)
        declared = key._jwk_data.get("alg")
        if declared:
            allowed = {declared}
        elif key.key_type == "RSA":
            allowed = ALGS_BY_KTY["RSA"]
        else:  # EC and OKP: the curve implies the one algorithm
            allowed = {key.algorithm_name}
        if alg not in allowed or alg not in ALGS_BY_KTY.get(key.key_type or "", set()):
            raise JwtLoginError(
                f"JWT algorithm {alg} does not fit key {str(kid)[:64]!r} "
                f"({key.key_type}{', ' + declared if declared else ''})"
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=issuer.audiences,
                issuer=issuer.issuer,
                leeway=issuer.max_clock_skew_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise JwtLoginError("the JWT has expired; get a fresh one from its issuer") from None
        except jwt.ImmatureSignatureError:
            raise JwtLoginError(
                "the JWT is not yet valid (nbf or iat in the future beyond the allowed clock "
                f"skew of {issuer.max_clock_skew_s:g} s); check the clocks"
            ) from None
        except jwt.InvalidAudienceError:
            raise JwtLoginError(
                f"wrong audience: issuer {issuer.name!r} accepts {', '.join(issuer.audiences)}"
            ) from None
        except jwt.InvalidIssuerError:
            raise JwtLoginError(
                f"wrong issuer: role {role.name!r} trusts tokens from {issuer.issuer!r}"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise JwtLoginError(f"the JWT lacks the {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise JwtLoginError("bad JWT signature") from None
        except jwt.InvalidTokenError as exc:
            raise JwtLoginError(f"invalid JWT ({type(exc).__name__})") from None
        self._check_bounds(role, claims)
        return claims

    def _check_bounds(self, role: JwtRole, claims: dict[str, Any]) -> None:
        if role.bound_subject is not None and not _claim_matches(
            role.bound_subject, claims.get("sub")
        ):
            raise JwtLoginError(f"the JWT's subject does not match role {role.name!r}")
        for claim, want in role.bound_claims.items():
            options = [want] if isinstance(want, str) else want
            if claim not in claims or not any(_claim_matches(g, claims[claim]) for g in options):
                raise JwtLoginError(f"the JWT's {claim!r} claim does not match role {role.name!r}")

    async def login(self, role_name: str, token: str) -> Login:
        """Check a login and mint its token (the role's policy, for ``ttl_s`` seconds)."""
        role = self.role(role_name)
        claims = await self.verify(role, token)
        subject = str(claims["sub"])[:200]
        name = f"jwt:{role.name}:{subject}"[:100]
        if not is_safe_line(name):
            name = f"jwt:{role.name}"
        secret, minted = await self.tokens.create(
            name, role_policy(role), timedelta(seconds=role.ttl_s)
        )
        return Login(secret, minted, role, self._issuers[role.issuer], subject)
