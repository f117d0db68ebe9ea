"""Organisations, users, sessions and invitations."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from argon2 import PasswordHasher

from common import events
from common.errors import AuthenticationError, ConflictError, NotFoundError, ValidationError
from control_plane import schema as t
from control_plane.db import autocommit, aware, fetch, is_postgres, iso, new_id
from control_plane.services.passwords import PasswordPool
from control_plane.services.principal import RANK, ROLES, Principal

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from common.events import EventSink
    from control_plane.background import Clock
    from control_plane.coordination import LoginLimiter
    from control_plane.services.audit import Audit
    from control_plane.settings import ControlPlaneSettings

MIN_PASSWORD = 12
LOCAL = "local"  # the source of calls made on the control plane's own host (init, tests)
INVITE_SUBJECT = "invitation-accept"  # the throttle's account name for invitation attempts
SESSION_PREFIX = "kvs_"
FINGERPRINT_RE = r"^sha256:[0-9a-f]{64}$"
INVITE_PREFIX = "kvi_"

# Accounts.session on PostgreSQL: the session check of every request, on the driver's connection
# (the SQLAlchemy query below is used on SQLite)
_PG_SESSION = """
SELECT s.id AS session_id, s.expires_at, s.revoked_at,
       u.id AS user_id, u.org_id, u.email, u.role
FROM cp_sessions s JOIN cp_users u ON u.id = s.user_id
WHERE s.token_hash = %s
"""
# Accounts.live_sessions on PostgreSQL: which of many token hashes are live sessions now
_PG_LIVE = """
SELECT s.token_hash FROM cp_sessions s JOIN cp_users u ON u.id = s.user_id
WHERE s.token_hash = ANY(%s::varchar[]) AND s.revoked_at IS NULL AND s.expires_at > %s
"""
_SESSION = (
    sa.select(
        t.sessions.c.id.label("session_id"),
        t.sessions.c.expires_at,
        t.sessions.c.revoked_at,
        t.users.c.id.label("user_id"),
        t.users.c.org_id,
        t.users.c.email,
        t.users.c.role,
    )
    .join(t.users, t.users.c.id == t.sessions.c.user_id)
    .where(t.sessions.c.token_hash == sa.bindparam("token_hash"))
)


def token_hash(token: str) -> str:
    """SHA-256 hex of an opaque token (what the database keeps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_email(email: Any) -> str:
    """A normalised e-mail address or a 400."""
    if not isinstance(email, str) or not 3 <= len(email) <= 320 or email.count("@") != 1:
        raise ValidationError("email must be an e-mail address")
    local, domain = email.strip().split("@")
    if not local or not domain or any(c.isspace() for c in email.strip()):
        raise ValidationError("email must be an e-mail address")
    return email.strip().lower()


def check_password(password: Any) -> str:
    """A password long enough, or a 400."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= 1024:
        raise ValidationError(f"password must be {MIN_PASSWORD} to 1024 characters")
    return password


def user_json(row: Any) -> dict[str, Any]:
    """A user as the API shows it (never the password hash)."""
    return {
        "id": row.id,
        "org_id": row.org_id,
        "email": row.email,
        "role": row.role,
        "created_at": iso(row.created_at),
    }


class Accounts:
    """Organisations, users (argon2id), sessions and invitations."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        settings: ControlPlaneSettings,
        limiter: LoginLimiter,
        sink: EventSink,
        audit: Audit,
    ) -> None:
        self.engine = engine
        self.single = autocommit(engine)  # one-statement reads: one round trip each
        self._pg = is_postgres(engine)
        self.clock = clock
        self.settings = settings
        self.limiter = limiter
        self.sink = sink
        self.audit = audit
        s = settings
        self.passwords = PasswordPool(
            PasswordHasher(time_cost=s.argon2_time_cost, memory_cost=s.argon2_memory_kib),
            workers=s.password_workers,
            queue=s.password_queue,
            per_source=s.password_per_source,
        )

    async def create_org(self, name: str, email: str, password: str) -> dict[str, Any]:
        """A new organisation and its owner."""
        if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
            raise ValidationError("organisation name must be 1 to 200 characters")
        email, password = check_email(email), check_password(password)
        org_id, user_id, now = new_id("org"), new_id("usr"), self.clock()
        hashed = await self.passwords.hash(password)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    t.orgs.insert().values(id=org_id, name=name.strip(), created_at=now)
                )
                await conn.execute(
                    t.users.insert().values(
                        id=user_id,
                        org_id=org_id,
                        email=email,
                        password_hash=hashed,
                        role="owner",
                        created_at=now,
                    )
                )
        except sa.exc.IntegrityError:
            raise ConflictError(f"a user with e-mail {email} already exists") from None
        return {"org_id": org_id, "user_id": user_id, "email": email}

    async def login(self, email: Any, password: Any, source: str = LOCAL) -> dict[str, Any]:
        """A new session for valid credentials.

        The throttle is asked before any hashing; failures slow down this (account, source)
        pair and the source, never the account from elsewhere. An unknown e-mail is checked
        against a dummy hash, so it costs as long as a wrong password.
        """
        if not isinstance(email, str) or not isinstance(password, str):
            raise ValidationError("email and password must be strings")
        key = email.strip().lower()
        with self.passwords.attempt(source):
            row = await self.check_password_of(key, password, source)
        await self.limiter.succeeded(key, source)
        if await self.requires_sso(row.org_id):
            raise AuthenticationError(
                "your organisation signs in with single sign-on: run `keyvault login --sso`"
            )
        await self.audit.record(row.org_id, "auth.login", actor=row.id)
        return await self.new_session(row)

    async def requires_sso(self, org_id: str) -> bool:
        """Whether the organisation refuses password logins."""
        query = sa.select(t.sso.c.require_sso).where(t.sso.c.org_id == org_id)
        async with self.engine.connect() as conn:
            return bool((await conn.execute(query)).scalar())

    async def new_session(self, row: Any) -> dict[str, Any]:
        """A new session for the user ``row`` (password or single sign-on checked before)."""
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        expires = now + timedelta(seconds=self.settings.session_ttl_seconds)
        async with self.engine.begin() as conn:
            await conn.execute(
                t.sessions.insert().values(
                    id=new_id("ses"),
                    token_hash=token_hash(token),
                    user_id=row.id,
                    org_id=row.org_id,
                    created_at=now,
                    expires_at=expires,
                )
            )
        return {"token": token, "expires_at": iso(expires), "user": user_json(row)}

    async def check_password_of(self, key: str, password: str, source: str) -> Any:
        """The user row when ``password`` is theirs; else AuthenticationError (or a 429).

        Call it inside ``self.passwords.attempt(source)``.
        """
        trusted = await self.limiter.admit(key, source)
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.users).where(t.users.c.email == key))).first()
        stored = row.password_hash if row else None
        if not await self.passwords.verify(stored, password, trusted=trusted) or row is None:
            if row is not None:
                await self.audit.record(row.org_id, "auth.login", actor=row.id, outcome="denied")
            await self.limiter.failed(key, source)
            raise AuthenticationError("wrong e-mail address or password")
        return row

    async def authenticate(self, header: str | None) -> Principal:
        """The operator behind ``Authorization: Bearer kvs_…``, or AuthenticationError."""
        if not header or not header.startswith("Bearer "):
            raise AuthenticationError("missing session token (Authorization: Bearer kvs_…)")
        return await self.session(header.removeprefix("Bearer ").strip())

    async def session(self, token: str) -> Principal:
        """The operator of a live session token."""
        bad = AuthenticationError("the session token is unknown, expired or revoked; log in again")
        if not token.startswith(SESSION_PREFIX) or len(token) > 200:
            raise bad
        # every request, fresh (no cache): one SELECT in autocommit, on PostgreSQL on the
        # driver's connection (SQLAlchemy's statement machinery: ~290 µs of CPU a statement
        # against psycopg's ~60, bench.db_statement)
        hashed = token_hash(token)
        if self._pg:
            rows = await fetch(self.engine, _PG_SESSION, (hashed,))
            row = rows[0] if rows else None
        else:
            async with self.single.connect() as conn:
                row = (await conn.execute(_SESSION, {"token_hash": hashed})).first()
        if row is None or row.revoked_at is not None:
            raise bad
        expires = aware(row.expires_at)
        if expires is None or expires <= self.clock():
            raise bad
        return Principal(row.user_id, row.org_id, row.email, row.role, row.session_id)

    async def live_sessions(self, hashes: Iterable[str]) -> set[str]:
        """Which of these token hashes (:func:`token_hash`) name a live session now: one
        statement for all of them, fresh (no cache), by the same rules as :meth:`session`
        (known, not revoked, not expired, its user still there).

        The operator streams' periodic re-check (``views/stream.py``): one call per replica
        and interval, whatever the number of streams and sessions.
        """
        wanted = sorted(set(hashes))
        if not wanted:
            return set()
        now = self.clock()
        if self._pg:
            rows = await fetch(self.engine, _PG_LIVE, (wanted, now))
            return {row.token_hash for row in rows}
        s, u = t.sessions, t.users
        query = (
            sa.select(s.c.token_hash, s.c.expires_at)
            .join(u, u.c.id == s.c.user_id)
            .where(s.c.token_hash.in_(wanted), s.c.revoked_at.is_(None))
        )
        async with self.single.connect() as conn:
            found = (await conn.execute(query)).all()
        # SQLite keeps naive UTC times: compare them as aware ones, as session() does
        return {row.token_hash for row in found if (aware(row.expires_at) or now) > now}

    async def logout(self, who: Principal) -> None:
        """Revoke the caller's session."""
        async with self.engine.begin() as conn:
            await conn.execute(
                t.sessions.update()
                .where(t.sessions.c.id == who.session_id)
                .values(revoked_at=self.clock())
            )

    async def me(self, who: Principal) -> dict[str, Any]:
        """The caller and their organisation."""
        async with self.engine.connect() as conn:
            org = (await conn.execute(sa.select(t.orgs).where(t.orgs.c.id == who.org_id))).one()
        return {
            "user": {"id": who.user_id, "email": who.email, "role": who.role},
            "org": {
                "id": org.id,
                "name": org.name,
                "metadata_key_fingerprint": org.metadata_key_fingerprint,
            },
        }

    async def invite(self, who: Principal, email: Any, role: Any) -> dict[str, Any]:
        """An invitation token for ``email`` to join the caller's organisation as ``role``."""
        email = check_email(email)
        if role not in ROLES:
            raise ValidationError(f"role must be one of {', '.join(ROLES)}")
        if RANK[role] > RANK[who.role]:
            raise ValidationError(f"you cannot invite a role above your own ({who.role})")
        token = INVITE_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        expires = now + timedelta(seconds=self.settings.invitation_ttl_seconds)
        invitation_id = new_id("inv")
        async with self.engine.begin() as conn:
            taken = await conn.execute(sa.select(t.users.c.id).where(t.users.c.email == email))
            if taken.first() is not None:
                raise ConflictError(f"a user with e-mail {email} already exists")
            await conn.execute(
                t.invitations.insert().values(
                    id=invitation_id,
                    org_id=who.org_id,
                    email=email,
                    role=role,
                    token_hash=token_hash(token),
                    created_by=who.user_id,
                    created_at=now,
                    expires_at=expires,
                )
            )
        return {
            "id": invitation_id,
            "email": email,
            "role": role,
            "token": token,
            "expires_at": iso(expires),
        }

    async def _live_invitation(self, token: str, source: str) -> None:
        """NotFoundError (counted as a failed attempt of ``source``) unless ``token`` names an
        unused, unexpired invitation; runs before any hashing."""
        unknown = NotFoundError("the invitation is unknown, used or expired")
        if not token.startswith(INVITE_PREFIX) or len(token) > 200:
            raise unknown
        await self.limiter.admit(INVITE_SUBJECT, source)
        query = sa.select(t.invitations.c.id).where(
            t.invitations.c.token_hash == token_hash(token),
            t.invitations.c.accepted_at.is_(None),
            t.invitations.c.expires_at > self.clock(),
        )
        async with self.engine.connect() as conn:
            found = (await conn.execute(query)).first()
        if found is None:
            await self.limiter.failed(INVITE_SUBJECT, source)
            raise unknown

    async def accept(self, token: Any, password: Any, source: str = LOCAL) -> dict[str, Any]:
        """Create the invited user with ``password``; the invitation is then used up.

        The token is checked before the password is hashed, so bogus tokens cost no argon2.
        """
        if not isinstance(token, str):
            raise NotFoundError("the invitation is unknown, used or expired")
        password = check_password(password)
        with self.passwords.attempt(source):
            await self._live_invitation(token, source)
            hashed = await self.passwords.hash(password)
        now = self.clock()
        async with self.engine.begin() as conn:
            claim = await conn.execute(
                t.invitations.update()
                .where(
                    t.invitations.c.token_hash == token_hash(token),
                    t.invitations.c.accepted_at.is_(None),
                    t.invitations.c.expires_at > now,
                )
                .values(accepted_at=now)
                .returning(t.invitations.c.org_id, t.invitations.c.email, t.invitations.c.role)
            )
            inv = claim.first()
            if inv is None:
                raise NotFoundError("the invitation is unknown, used or expired")
            user_id = new_id("usr")
            try:
                await conn.execute(
                    t.users.insert().values(
                        id=user_id,
                        org_id=inv.org_id,
                        email=inv.email,
                        password_hash=hashed,
                        role=inv.role,
                        created_at=now,
                    )
                )
            except sa.exc.IntegrityError:
                raise ConflictError(f"a user with e-mail {inv.email} already exists") from None
        await self.limiter.succeeded(INVITE_SUBJECT, source)
        await self.audit.record(inv.org_id, "invitations.accept", actor=user_id, target=user_id)
        return {"id": user_id, "org_id": inv.org_id, "email": inv.email, "role": inv.role}

    async def list_users(self, who: Principal) -> list[dict[str, Any]]:
        """The users of the caller's organisation."""
        query = sa.select(t.users).where(t.users.c.org_id == who.org_id).order_by(t.users.c.email)
        async with self.engine.connect() as conn:
            return [user_json(r) for r in await conn.execute(query)]

    async def set_metadata_key(self, who: Principal, fingerprint: Any) -> dict[str, Any]:
        """Register the fingerprint of the organisation's metadata key (it stays customer-side)."""
        if not isinstance(fingerprint, str) or not re.match(FINGERPRINT_RE, fingerprint):
            raise ValidationError("fingerprint must be sha256:<64 lowercase hex digits>")
        async with self.engine.begin() as conn:
            await conn.execute(
                t.orgs.update()
                .where(t.orgs.c.id == who.org_id)
                .values(metadata_key_fingerprint=fingerprint)
            )
        data = {"fingerprint": fingerprint}
        at = self.clock()
        await self.sink.publish(events.make(events.METADATA_KEY_CHANGED, who.org_id, at, data))
        return {"org_id": who.org_id, "fingerprint": fingerprint}
