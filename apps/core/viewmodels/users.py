"""Users of the organisation: list, invite, change role, remove, reset a password, sessions.

Admins and owners manage others (the control plane enforces the rules: no acting above your
rank, the last owner stays); everyone sees and ends their own sessions. A token just made (an
invitation or a password reset) is shown once with the command the other person runs, then
forgotten. Stream events of the ``user`` family make the list reload.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apps.core.viewmodels.base import Listener, ViewModel, when
from common.errors import ValidationError

ROLES = ("viewer", "operator", "admin", "owner")
MANAGERS = ("admin", "owner")


@dataclass(frozen=True)
class UserRow:
    """One user of the organisation."""

    id: str
    email: str
    role: str
    created_at: datetime | None
    you: bool = False

    @classmethod
    def from_json(cls, doc: dict[str, Any], me: str | None) -> UserRow:
        """A row from an item of ``GET /users``."""
        return cls(
            id=str(doc["id"]),
            email=str(doc["email"]),
            role=str(doc["role"]),
            created_at=when(doc.get("created_at")),
            you=str(doc.get("email", "")).lower() == (me or "").lower(),
        )


@dataclass(frozen=True)
class SessionRow:
    """One live session (never its token)."""

    id: str
    user_id: str
    created_at: datetime | None
    expires_at: datetime | None
    current: bool

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SessionRow:
        """A row from an item of a sessions listing."""
        return cls(
            id=str(doc["id"]),
            user_id=str(doc["user_id"]),
            created_at=when(doc.get("created_at")),
            expires_at=when(doc.get("expires_at")),
            current=bool(doc.get("current")),
        )


@dataclass(frozen=True)
class IssuedToken:
    """An invitation or reset token just made: shown once, never in ``repr``."""

    kind: str  # "invitation" or "reset"
    email: str
    expires_at: datetime | None
    command: str = field(repr=False)


@dataclass(frozen=True)
class UsersState:
    """The users, the sessions of the one selected, and a token just issued."""

    users: tuple[UserRow, ...] = ()
    sessions_of: str | None = None
    sessions: tuple[SessionRow, ...] = ()
    issued: IssuedToken | None = None
    loading: bool = False
    error: str | None = None


def join_command(url: str, kind: str, token: str) -> str:
    """The line the other person runs with a token."""
    verb = "accept" if kind == "invitation" else "set-password"
    return f"keyvault users {verb} --control-plane {shlex.quote(url)} --token {shlex.quote(token)}"


class UsersViewModel(ViewModel[UsersState]):
    """The organisation's users; commands raise the control plane's one-line errors."""

    def __init__(
        self,
        client: Any,
        *,
        my_email: str | None = None,
        my_role: str | None = None,
        on_change: Listener | None = None,
    ) -> None:
        super().__init__(UsersState(), on_change)
        self.client = client
        self.my_email = my_email
        self.my_role = my_role

    @property
    def can_manage(self) -> bool:
        """Whether this operator may manage other users (admins and owners)."""
        return self.my_role in MANAGERS

    def _mine(self, user_id: str | None) -> bool:
        row = self.row(user_id) if user_id else None
        return user_id is None or (row is not None and row.you)

    def row(self, user_id: str) -> UserRow | None:
        """The listed user with this id."""
        return next((u for u in self.state.users if u.id == user_id), None)

    async def refresh(self) -> None:
        """Load the users (errors go to ``state.error``); your own sessions for non-admins."""

        async def work() -> None:
            if self.can_manage:
                rows = await self.client.list_users()
                self._set(users=tuple(UserRow.from_json(d, self.my_email) for d in rows))
            if self.state.sessions_of is not None or not self.can_manage:
                await self._load_sessions(self.state.sessions_of)

        await self._load(work)

    async def _load_sessions(self, user_id: str | None) -> None:
        mine = self._mine(user_id)
        rows = await self.client.list_sessions(None if mine else user_id)
        self._set(sessions_of=user_id, sessions=tuple(SessionRow.from_json(d) for d in rows))

    async def show_sessions(self, user_id: str | None) -> None:
        """List a user's sessions (None: your own); raises KeyVaultError."""
        await self._load_sessions(user_id)

    async def invite(self, email: str, role: str) -> IssuedToken:
        """Invite ``email`` as ``role``; the token is shown once in ``state.issued``."""
        address = email.strip()
        if "@" not in address or " " in address:
            raise ValidationError(f"{email!r} is not an e-mail address", details={"field": "email"})
        if role not in ROLES:
            raise ValidationError(
                f"role must be one of {', '.join(ROLES)}", details={"field": "role"}
            )
        doc = await self.client.invite(address, role)
        issued = IssuedToken(
            "invitation",
            str(doc["email"]),
            when(doc.get("expires_at")),
            join_command(self.client.url, "invitation", str(doc["token"])),
        )
        self._set(issued=issued)
        return issued

    async def set_role(self, user_id: str, role: str) -> UserRow:
        """Change a user's role."""
        if role not in ROLES:
            raise ValidationError(
                f"role must be one of {', '.join(ROLES)}", details={"field": "role"}
            )
        row = UserRow.from_json(await self.client.set_role(user_id, role), self.my_email)
        self._set(users=tuple(row if u.id == user_id else u for u in self.state.users))
        return row

    async def remove(self, user_id: str) -> None:
        """Remove a user (their sessions end)."""
        await self.client.remove_user(user_id)
        self._set(users=tuple(u for u in self.state.users if u.id != user_id))

    async def reset_password(self, user_id: str) -> IssuedToken:
        """Lock a user's password; the reset token is shown once in ``state.issued``."""
        doc = await self.client.reset_password(user_id)
        row = self.row(user_id)
        issued = IssuedToken(
            "reset",
            row.email if row else user_id,
            when(doc.get("expires_at")),
            join_command(self.client.url, "reset", str(doc["token"])),
        )
        self._set(issued=issued)
        return issued

    async def end_sessions(self, user_id: str | None, session_id: str | None = None) -> int:
        """End one session or all of a user's (None: your own, this one included, after which
        the app must log in again); returns how many ended."""
        mine = self._mine(user_id)
        doc = await self.client.end_sessions(None if mine else user_id, session_id)
        if mine and session_id is None:
            self._set(sessions=())  # this session ended too: nothing more to ask
        else:
            await self._load_sessions(user_id)
        return int(doc.get("ended", 0))

    def clear_issued(self) -> None:
        """Forget the token just shown (it was shown once)."""
        if self.state.issued is not None:
            self._set(issued=None)
