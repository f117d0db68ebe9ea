"""User management: roles, removal, passwords and sessions of an organisation's operators.

Rules, checked here for every caller (the route's least role is checked before):

* a user of another organisation does not exist (404);
* nobody acts on a user ranked above them, nor grants a role above their own (403);
* the organisation always keeps an owner: the last one can be neither demoted nor removed
  (409). Owner changes lock the organisation's row, so two owners demoting each other at once
  cannot both succeed;
* a removed user's, a reset user's and a password-changing user's other sessions end at once.

Every change is audited (by the API's middleware, or here for the unauthenticated reset) and
pushed on the organisation's operator stream (``events.USER_CHANGED``, ``USER_REMOVED``,
``USER_SESSIONS_ENDED``) with ids and roles only.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common import events
from common.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationError
from control_plane import schema as t
from control_plane.db import iso, new_id
from control_plane.services.accounts import (
    LOCAL,
    check_password,
    token_hash,
    user_json,
)
from control_plane.services.principal import RANK, ROLES, Principal

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from common.events import EventSink
    from control_plane.background import Clock
    from control_plane.coordination import LoginLimiter
    from control_plane.services.accounts import Accounts
    from control_plane.services.audit import Audit

RESET_PREFIX = "kvr_"
RESET_TTL = timedelta(hours=24)
LOCKED_HASH = "!"  # no argon2 hash: never verifies (a reset, not yet completed account)
RESET_SUBJECT = "password-reset"  # the throttle's account name for reset attempts


def session_json(row: Any, current: str | None) -> dict[str, Any]:
    """A session as the API shows it (never its token)."""
    return {
        "id": row.id,
        "user_id": row.user_id,
        "created_at": iso(row.created_at),
        "expires_at": iso(row.expires_at),
        "current": row.id == current,
    }


class Users:
    """Changes to an organisation's users and their sessions."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        limiter: LoginLimiter,
        sink: EventSink,
        audit: Audit,
        accounts: Accounts,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.limiter = limiter
        self.sink = sink
        self.audit = audit
        self.accounts = accounts

    async def _publish(self, kind: events.EventKind, org_id: str, data: dict[str, Any]) -> None:
        await self.sink.publish(events.make(kind, org_id, self.clock(), data))

    # ------------------------------------------------------------ helpers
    async def _target(self, conn: AsyncConnection, who: Principal, user_id: str) -> Any:
        """The user ``user_id`` of the caller's organisation, or NotFoundError."""
        query = sa.select(t.users).where(t.users.c.id == user_id, t.users.c.org_id == who.org_id)
        row = (await conn.execute(query)).first()
        if row is None:
            raise NotFoundError(f"no user {user_id} in your organisation")
        return row

    @staticmethod
    def _outranks(who: Principal, target: Any) -> None:
        if RANK[target.role] > RANK[who.role]:
            raise PermissionDeniedError(
                f"{target.email} is {target.role}, above your role ({who.role})"
            )

    async def _lock_owners(self, conn: AsyncConnection, org_id: str) -> None:
        """Lock the organisation's row: owner changes of one organisation run one at a time
        (PostgreSQL; SQLite runs every write alone anyway)."""
        await conn.execute(sa.select(t.orgs.c.id).where(t.orgs.c.id == org_id).with_for_update())

    @staticmethod
    def _another_owner(org_id: str, user_id: str) -> sa.ColumnElement[bool]:
        """True while the organisation has an owner besides ``user_id``, evaluated inside the
        changing statement itself (so no read-then-write gap)."""
        others = (
            sa.select(sa.func.count())
            .select_from(t.users.alias("o"))
            .where(sa.text("o.org_id = :oid AND o.role = 'owner' AND o.id <> :uid"))
            .params(oid=org_id, uid=user_id)
            .scalar_subquery()
        )
        return sa.or_(t.users.c.role != "owner", others > 0)

    async def _end_sessions(
        self,
        conn: AsyncConnection,
        user_id: str,
        *,
        keep: str | None = None,
        only: str | None = None,
    ) -> int:
        """Revoke the user's live sessions (all, all but ``keep``, or just ``only``)."""
        query = t.sessions.update().where(
            t.sessions.c.user_id == user_id, t.sessions.c.revoked_at.is_(None)
        )
        if keep is not None:
            query = query.where(t.sessions.c.id != keep)
        if only is not None:
            query = query.where(t.sessions.c.id == only)
        ended = await conn.execute(query.values(revoked_at=self.clock()))
        return int(ended.rowcount or 0)

    async def _ended(self, org_id: str, user_id: str, count: int) -> None:
        if count:
            data = {"user_id": user_id, "count": count}
            await self._publish(events.USER_SESSIONS_ENDED, org_id, data)

    # ------------------------------------------------------------ roles and removal
    async def set_role(self, who: Principal, user_id: str, role: Any) -> dict[str, Any]:
        """Change a user's role (never above the caller's; the last owner stays owner)."""
        if role not in ROLES:
            raise ValidationError(f"role must be one of {', '.join(ROLES)}")
        if RANK[role] > RANK[who.role]:
            raise PermissionDeniedError(f"you cannot grant a role above your own ({who.role})")
        async with self.engine.begin() as conn:
            target = await self._target(conn, who, user_id)
            self._outranks(who, target)
            query = t.users.update().where(t.users.c.id == user_id)
            if role != "owner":
                await self._lock_owners(conn, who.org_id)
                query = query.where(self._another_owner(who.org_id, user_id))
            if not (await conn.execute(query.values(role=role))).rowcount:
                raise ConflictError("the organisation's last owner cannot be demoted")
            row = await self._target(conn, who, user_id)
        await self._publish(events.USER_CHANGED, who.org_id, {"user_id": user_id, "role": role})
        return user_json(row)

    async def remove(self, who: Principal, user_id: str) -> None:
        """Remove a user and end their sessions (the last owner cannot be removed)."""
        async with self.engine.begin() as conn:
            target = await self._target(conn, who, user_id)
            self._outranks(who, target)
            await self._lock_owners(conn, who.org_id)
            gone = await conn.execute(
                t.users.update()
                .where(t.users.c.id == user_id, self._another_owner(who.org_id, user_id))
                .values(role=target.role)  # a no-op that claims the row if removal is allowed
            )
            if not gone.rowcount:
                raise ConflictError("the organisation's last owner cannot be removed")
            await conn.execute(t.sessions.delete().where(t.sessions.c.user_id == user_id))
            await conn.execute(
                t.password_resets.delete().where(t.password_resets.c.user_id == user_id)
            )
            await conn.execute(t.users.delete().where(t.users.c.id == user_id))
        await self._publish(events.USER_REMOVED, who.org_id, {"user_id": user_id})

    # ------------------------------------------------------------ passwords
    async def reset_password(self, who: Principal, user_id: str) -> dict[str, Any]:
        """Lock the user's password, end their sessions, and return a single-use reset token
        (shown once) with which they choose a new one."""
        token = RESET_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        async with self.engine.begin() as conn:
            target = await self._target(conn, who, user_id)
            self._outranks(who, target)
            await conn.execute(
                t.users.update().where(t.users.c.id == user_id).values(password_hash=LOCKED_HASH)
            )
            await conn.execute(
                t.password_resets.insert().values(
                    id=new_id("pwr"),
                    org_id=who.org_id,
                    user_id=user_id,
                    token_hash=token_hash(token),
                    created_by=who.user_id,
                    created_at=now,
                    expires_at=now + RESET_TTL,
                )
            )
            ended = await self._end_sessions(conn, user_id)
        await self._ended(who.org_id, user_id, ended)
        return {"user_id": user_id, "token": token, "expires_at": iso(now + RESET_TTL)}

    async def complete_reset(self, token: Any, password: Any, source: str = LOCAL) -> None:
        """Set a new password with a reset token; the token is checked before any hashing."""
        unknown = NotFoundError("the reset token is unknown, used or expired")
        if not isinstance(token, str) or not token.startswith(RESET_PREFIX) or len(token) > 200:
            raise unknown
        password = check_password(password)
        accounts = self.accounts
        with accounts.passwords.attempt(source):
            await self.limiter.admit(RESET_SUBJECT, source)
            now = self.clock()
            live = sa.select(t.password_resets).where(
                t.password_resets.c.token_hash == token_hash(token),
                t.password_resets.c.used_at.is_(None),
                t.password_resets.c.expires_at > now,
            )
            async with self.engine.connect() as conn:
                reset = (await conn.execute(live)).first()
            if reset is None:
                await self.limiter.failed(RESET_SUBJECT, source)
                raise unknown
            hashed = await accounts.passwords.hash(password)
        async with self.engine.begin() as conn:
            claim = await conn.execute(
                t.password_resets.update()
                .where(t.password_resets.c.id == reset.id, t.password_resets.c.used_at.is_(None))
                .values(used_at=now)
            )
            if not claim.rowcount:
                raise unknown
            await conn.execute(
                t.users.update().where(t.users.c.id == reset.user_id).values(password_hash=hashed)
            )
        await self.limiter.succeeded(RESET_SUBJECT, source)
        await self.audit.record(
            reset.org_id, "users.password_reset.complete", actor=reset.user_id, target=reset.user_id
        )

    async def change_password(
        self, who: Principal, current: Any, new: Any, source: str = LOCAL
    ) -> int:
        """Change the caller's own password (the current one is checked and throttled like a
        login); every other session of theirs ends. Returns how many ended."""
        if not isinstance(current, str):
            raise ValidationError("current_password must be a string")
        new = check_password(new)
        accounts = self.accounts
        with accounts.passwords.attempt(source):
            await accounts.check_password_of(who.email, current, source)
            hashed = await accounts.passwords.hash(new)
        async with self.engine.begin() as conn:
            await conn.execute(
                t.users.update().where(t.users.c.id == who.user_id).values(password_hash=hashed)
            )
            ended = await self._end_sessions(conn, who.user_id, keep=who.session_id)
        await self._ended(who.org_id, who.user_id, ended)
        return ended

    # ------------------------------------------------------------ sessions
    async def list_sessions(self, who: Principal, user_id: str) -> list[dict[str, Any]]:
        """A user's live sessions (admins: anyone of theirs; everyone: their own)."""
        query = (
            sa.select(t.sessions)
            .where(
                t.sessions.c.user_id == user_id,
                t.sessions.c.revoked_at.is_(None),
                t.sessions.c.expires_at > self.clock(),
            )
            .order_by(t.sessions.c.created_at)
        )
        async with self.engine.connect() as conn:
            await self._target(conn, who, user_id)
            return [session_json(r, who.session_id) for r in await conn.execute(query)]

    async def end_sessions(
        self, who: Principal, user_id: str, session_id: str | None = None
    ) -> dict[str, int]:
        """End one session of a user (``session_id``) or all of them."""
        async with self.engine.begin() as conn:
            target = await self._target(conn, who, user_id)
            if target.id != who.user_id:
                self._outranks(who, target)
            if session_id is not None:
                found = sa.select(t.sessions.c.id).where(
                    t.sessions.c.id == session_id, t.sessions.c.user_id == user_id
                )
                if (await conn.execute(found)).first() is None:
                    raise NotFoundError(f"no session {session_id} of that user")
            ended = await self._end_sessions(conn, user_id, only=session_id)
        await self._ended(who.org_id, user_id, ended)
        return {"ended": ended}
