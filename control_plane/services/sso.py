"""Single sign-on: an organisation trusts an OpenID Connect provider for its operators.

The operator's app runs the authorization-code flow with PKCE against the provider itself,
with a loopback redirect (RFC 8252), and hands the control plane the ID token it got. Here the
token must be signed by a key of the provider's JWKS, name the configured issuer and, as its
audience, the configured client id, and be unexpired. Its groups claim maps to our roles (the
highest mapped role wins); no mapped group means no access, and the user's sessions end. An
unknown e-mail in that organisation becomes an account on first login (it has no password).
With ``require_sso`` the organisation's password logins are refused. A provider that insists
on a client secret even from native apps gets the one it issued for them
(``native_client_secret``, public by nature: RFC 8252 §8.5).

The control plane binds each login to a nonce it issues itself (:meth:`SingleSignOn.start`):
the app puts that nonce in its authorization request and hands back the login id with the ID
token; the login is single-use and expires, and the token's ``nonce`` must equal the one
issued, so an ID token obtained elsewhere, or a replayed one, is refused here and not only by
the app. The provider's discovery document and JWKS are fetched through
:mod:`control_plane.outbound` (no internal addresses unless the settings allow them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import jwt
import sqlalchemy as sa

from common.errors import AuthenticationError, NotFoundError, UnavailableError, ValidationError
from control_plane import outbound
from control_plane import schema as t
from control_plane.db import aware, iso, new_id
from control_plane.errors import OutboundRefused, RateLimitedError
from control_plane.services.accounts import LOCAL, check_email
from control_plane.services.principal import RANK, ROLES, Principal
from control_plane.services.users import LOCKED_HASH

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from control_plane.background import Clock
    from control_plane.coordination import LoginLimiter
    from control_plane.services.accounts import Accounts
    from control_plane.services.audit import Audit
    from control_plane.services.users import Users
    from control_plane.settings import ControlPlaneSettings

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
DISCOVERY_TTL = 300.0
SSO_SUBJECT = "sso"  # the throttle's account name for refused ID tokens
LOGIN_TTL = 600  # seconds a started login may take (the browser step included)
STARTS_PER_SOURCE = 20  # logins one address may have started and not finished


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _expired(expires_at: Any, now: Any) -> bool:
    ends, at = aware(expires_at), aware(now)
    return ends is None or at is None or ends <= at


def outbound_policy(settings: ControlPlaneSettings) -> outbound.OutboundPolicy:
    """What the control plane may fetch from identity providers, from its settings."""
    return outbound.OutboundPolicy(
        allowed_networks=tuple(settings.sso.allowed_networks),
        allow_plain_http=settings.sso.allow_plain_http,
        max_bytes=settings.sso.fetch_max_bytes,
        timeout=settings.sso.fetch_timeout_seconds,
    )


def _refused(why: str) -> AuthenticationError:
    return AuthenticationError(f"single sign-on refused: {why}")


def _check_config(doc: dict[str, Any]) -> dict[str, Any]:
    """The settable fields, checked (ValidationError naming the field)."""
    issuer = doc.get("issuer")
    if not isinstance(issuer, str) or not 1 <= len(issuer) <= 500:
        raise ValidationError(
            "issuer must be the provider's URL (at most 500 characters)",
            details={"field": "issuer"},
        )
    client_id = doc.get("client_id")
    if not isinstance(client_id, str) or not 1 <= len(client_id) <= 200:
        raise ValidationError("client_id must be 1 to 200 characters")
    native = doc.get("native_client_secret")
    if native is not None and (not isinstance(native, str) or not 1 <= len(native) <= 200):
        raise ValidationError("native_client_secret must be 1 to 200 characters")
    claim = doc.get("groups_claim", "groups")
    if not isinstance(claim, str) or not 1 <= len(claim) <= 100:
        raise ValidationError("groups_claim must be 1 to 100 characters")
    role_map = doc.get("role_map")
    if not isinstance(role_map, dict) or not role_map or len(role_map) > 100:
        raise ValidationError("role_map must map 1 to 100 provider groups to roles")
    for group, role in role_map.items():
        if not isinstance(group, str) or not group or role not in ROLES:
            raise ValidationError(f"role_map: {group!r} must map to one of {', '.join(ROLES)}")
    require = doc.get("require_sso", False)
    if not isinstance(require, bool):
        raise ValidationError("require_sso must be true or false")
    return {
        "issuer": issuer.rstrip("/"),
        "client_id": client_id,
        "native_client_secret": native,
        "groups_claim": claim,
        "role_map": role_map,
        "require_sso": require,
    }


def _config_json(row: Any) -> dict[str, Any]:
    return {
        "issuer": row.issuer,
        "client_id": row.client_id,
        "native_client_secret": row.native_client_secret,
        "groups_claim": row.groups_claim,
        "role_map": json.loads(row.role_map),
        "require_sso": bool(row.require_sso),
        "updated_at": iso(row.updated_at),
    }


class SingleSignOn:
    """OpenID Connect configuration per organisation, and logins with ID tokens."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        limiter: LoginLimiter,
        audit: Audit,
        accounts: Accounts,
        users: Users,
        policy: outbound.OutboundPolicy,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.limiter = limiter
        self.audit = audit
        self.accounts = accounts
        self.users = users
        self.policy = policy
        self._keys: dict[str, tuple[float, jwt.PyJWKSet]] = {}

    async def configure(self, who: Principal, doc: dict[str, Any]) -> dict[str, Any]:
        """Set (replace) the organisation's provider, group mapping and password policy."""
        values = _check_config(doc)
        try:  # the admin learns now, not at the first login, that the address is refused
            await outbound.check_url(values["issuer"], self.policy, "the issuer URL")
        except UnavailableError as exc:
            raise ValidationError(f"{exc.message}; check the issuer URL") from None
        row = {
            **values,
            "role_map": json.dumps(values["role_map"], sort_keys=True),
            "updated_at": self.clock(),
        }
        async with self.engine.begin() as conn:
            done = await conn.execute(t.sso.update().where(t.sso.c.org_id == who.org_id), row)
            if not done.rowcount:
                await conn.execute(t.sso.insert().values(org_id=who.org_id, **row))
        self._keys.pop(values["issuer"], None)
        return await self.config(who.org_id)

    async def config(self, org_id: str) -> dict[str, Any]:
        """The organisation's configuration, or NotFoundError."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.sso).where(t.sso.c.org_id == org_id))).first()
        if row is None:
            raise NotFoundError("this organisation has no single sign-on configured")
        return _config_json(row)

    async def public(self, org_id: str) -> dict[str, Any]:
        """What an operator's app needs to start the flow: issuer, client id and, for
        providers that want one from native apps, the client secret they gave for them (not a
        secret in an app anyone can install, RFC 8252 §8.5; never a confidential client's)."""
        doc = await self.config(org_id)
        public = {"issuer": doc["issuer"], "client_id": doc["client_id"]}
        if doc["native_client_secret"]:
            public["client_secret"] = doc["native_client_secret"]
        return public

    async def start(self, org_id: Any, source: str = LOCAL) -> dict[str, Any]:
        """Begin a login: what :meth:`public` says, plus a fresh single-use ``login_id`` and
        the ``nonce`` the app must send the provider (both expire after ``expires_in`` s)."""
        if not isinstance(org_id, str):
            raise ValidationError("org_id must be a string")
        public = await self.public(org_id)
        login_id, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now, src = self.clock(), _hash(source)[:32]
        logins = t.sso_logins
        async with self.engine.begin() as conn:
            await conn.execute(logins.delete().where(logins.c.expires_at <= now))
            q = sa.select(sa.func.count()).select_from(logins).where(logins.c.source == src)
            if (await conn.scalar(q) or 0) >= STARTS_PER_SOURCE:
                raise RateLimitedError(
                    LOGIN_TTL,
                    f"{STARTS_PER_SOURCE} single sign-ins from this address are still open; "
                    "finish one, or try again when they expire",
                )
            await conn.execute(
                logins.insert().values(
                    id_hash=_hash(login_id),
                    org_id=org_id,
                    nonce=nonce,
                    source=src,
                    expires_at=now + timedelta(seconds=LOGIN_TTL),
                )
            )
        return {**public, "login_id": login_id, "nonce": nonce, "expires_in": LOGIN_TTL}

    async def _take_login(self, org_id: str, login_id: str) -> str:
        """The nonce issued for ``login_id`` in this organisation, used up (single use)."""
        logins = t.sso_logins
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    logins.delete()
                    .where(logins.c.id_hash == _hash(login_id))
                    .returning(logins.c.org_id, logins.c.nonce, logins.c.expires_at)
                )
            ).first()
        if row is None or row.org_id != org_id or _expired(row.expires_at, self.clock()):
            raise _refused("this sign-in was not started here, was already used or has expired")
        return str(row.nonce)

    async def _jwks(self, issuer: str) -> jwt.PyJWKSet:
        """The provider's signing keys (discovery + JWKS, cached a few minutes), fetched
        through :mod:`control_plane.outbound`."""
        cached = self._keys.get(issuer)
        if cached is not None and time.monotonic() - cached[0] < DISCOVERY_TTL:
            return cached[1]
        discovery = f"{issuer}/.well-known/openid-configuration"
        try:
            found = await outbound.fetch(discovery, self.policy, "the issuer URL")
            if found.status != 200:
                raise ValueError(f"{discovery} answered HTTP {found.status}")
            jwks_uri = found.json()["jwks_uri"]
            if not isinstance(jwks_uri, str):
                raise ValueError("its discovery document has no jwks_uri")
            keys = await outbound.fetch(jwks_uri, self.policy, "the provider's jwks_uri")
            if keys.status != 200:
                raise ValueError(f"{jwks_uri} answered HTTP {keys.status}")
            keyset = jwt.PyJWKSet.from_dict(keys.json())
        except (OutboundRefused, UnavailableError) as exc:
            raise UnavailableError(
                f"the identity provider {issuer} cannot be read: {exc.message}"
            ) from None
        except (KeyError, ValueError, TypeError, jwt.PyJWTError) as exc:
            raise UnavailableError(
                f"the identity provider {issuer} cannot be read: {exc}"
            ) from None
        self._keys[issuer] = (time.monotonic(), keyset)
        return keyset

    async def _claims(self, config: dict[str, Any], id_token: str) -> dict[str, Any]:
        """The verified claims of an ID token, or a one-line refusal saying why."""
        keys = await self._jwks(config["issuer"])
        try:
            kid = jwt.get_unverified_header(id_token).get("kid")
            key = next((k for k in keys.keys if kid is None or k.key_id == kid), None)
            if key is None:
                raise _refused("the token is signed by a key the provider does not publish")
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key.key,
                algorithms=ALGORITHMS,
                audience=config["client_id"],
                issuer=config["issuer"],
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise _refused("the ID token has expired; sign in again") from None
        except jwt.InvalidAudienceError:
            raise _refused("the ID token was issued to another application") from None
        except jwt.InvalidIssuerError:
            raise _refused("the ID token comes from another provider") from None
        except jwt.PyJWTError as exc:
            raise _refused(f"the ID token is not valid ({type(exc).__name__})") from None
        return claims

    @staticmethod
    def _role(config: dict[str, Any], claims: dict[str, Any]) -> str | None:
        groups = claims.get(config["groups_claim"]) or []
        if isinstance(groups, str):
            groups = [groups]
        mapped = [config["role_map"][g] for g in groups if g in config["role_map"]]
        return max(mapped, key=RANK.__getitem__) if mapped else None

    async def login(
        self, org_id: Any, id_token: Any, login_id: Any, source: str = LOCAL
    ) -> dict[str, Any]:
        """A session for the operator named by a valid ID token of the organisation's provider,
        issued for the login :meth:`start` began (its nonce; single use)."""
        if (
            not isinstance(org_id, str)
            or not isinstance(id_token, str)
            or not isinstance(login_id, str)
            or len(id_token) > 20_000
            or len(login_id) > 100
        ):
            raise ValidationError("org_id, id_token and login_id must be strings")
        await self.limiter.admit(SSO_SUBJECT, source)
        try:
            nonce = await self._take_login(org_id, login_id)
            config = await self.config(org_id)
            claims = await self._claims(config, id_token)
            got = claims.get("nonce")
            if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
                raise _refused(
                    "the ID token was not issued for this sign-in (nonce); sign in again"
                )
            email = check_email(claims.get("email"))
        except (AuthenticationError, NotFoundError, ValidationError):
            await self.limiter.failed(SSO_SUBJECT, source)
            raise
        row = await self._account(org_id, email, self._role(config, claims))
        await self.limiter.succeeded(SSO_SUBJECT, source)
        await self.audit.record(org_id, "auth.sso_login", actor=row.id)
        return await self.accounts.new_session(row)

    async def _account(self, org_id: str, email: str, role: str | None) -> Any:
        """The user, created or given the role their groups map to; refused without one."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(sa.select(t.users).where(t.users.c.email == email))).first()
            if row is not None and row.org_id != org_id:
                raise _refused(f"{email} belongs to another organisation")
            if role is None:
                if row is not None:  # removed from every mapped group: their sessions end
                    await conn.execute(
                        t.sessions.update()
                        .where(t.sessions.c.user_id == row.id, t.sessions.c.revoked_at.is_(None))
                        .values(revoked_at=self.clock())
                    )
            elif row is None:
                values = {
                    "id": new_id("usr"),
                    "org_id": org_id,
                    "email": email,
                    "password_hash": LOCKED_HASH,
                    "role": role,
                    "created_at": self.clock(),
                }
                await conn.execute(t.users.insert().values(**values))
            elif row.role != role:
                await conn.execute(t.users.update().where(t.users.c.id == row.id).values(role=role))
            found = (await conn.execute(sa.select(t.users).where(t.users.c.email == email))).first()
        if role is None:
            raise _refused("none of your groups at the provider grants a role here")
        return found
