"""Enrollment tokens: list, create (shown once, with the command to run), revoke.

``keyvault agent enroll --control-plane`` wants the control plane's *agent gateway* (it fetches
``/api/v1/agent/bootstrap`` there and registers through it), not the operator API's URL; the
gateway URL comes from the profile (``keyvault vaults enroll-token --gateway-url`` remembers it).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apps.core.viewmodels.base import Listener, ViewModel, when
from common.errors import ValidationError

GATEWAY_PLACEHOLDER = "https://<control-plane-host>:8444"
MAX_TTL_HOURS = 7 * 24


def enroll_command(gateway_url: str | None, token: str, name: str | None = None) -> str:
    """The exact line to run on the agent host (with the vault's name when one is given)."""
    target = shlex.quote(gateway_url.strip().rstrip("/")) if gateway_url else GATEWAY_PLACEHOLDER
    line = f"keyvault agent enroll --control-plane {target} --token {shlex.quote(token)}"
    return line + (f" --name {shlex.quote(name.strip())}" if name and name.strip() else "")


@dataclass(frozen=True)
class TokenRow:
    """One enrollment token (never its secret): state active, used, expired or revoked."""

    id: str
    description: str
    state: str
    created_at: datetime | None
    expires_at: datetime | None
    used_at: datetime | None
    vault_id: str | None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TokenRow:
        """A row from an item of ``GET /enrollment-tokens``."""
        return cls(
            id=str(doc["id"]),
            description=str(doc.get("description") or ""),
            state=str(doc.get("state") or ""),
            created_at=when(doc.get("created_at")),
            expires_at=when(doc.get("expires_at")),
            used_at=when(doc.get("used_at")),
            vault_id=doc.get("vault_id"),
        )


@dataclass(frozen=True)
class CreatedToken:
    """A token just made: shown once; neither it nor the command is in ``repr``."""

    token: str = field(repr=False)
    expires_at: datetime | None
    command: str = field(repr=False)
    id: str = ""


@dataclass(frozen=True)
class EnrollmentState:
    """The organisation's tokens (newest first) and the one just created, if any."""

    tokens: tuple[TokenRow, ...] = ()
    created: CreatedToken | None = None
    loading: bool = False
    error: str | None = None


def _ttl_seconds(ttl_hours: float | int | str) -> int:
    try:
        hours = float(ttl_hours)
    except (TypeError, ValueError):
        raise ValidationError(
            "the lifetime must be a number of hours", details={"field": "ttl_hours"}
        ) from None
    seconds = round(hours * 3600)
    if not 60 <= seconds <= MAX_TTL_HOURS * 3600:
        raise ValidationError(
            f"the lifetime must be from a minute to {MAX_TTL_HOURS} hours",
            details={"field": "ttl_hours"},
        )
    return seconds


class EnrollmentViewModel(ViewModel[EnrollmentState]):
    """Make single-use enrollment tokens for new agents."""

    def __init__(
        self, client: Any, gateway_url: str | None, on_change: Listener | None = None
    ) -> None:
        super().__init__(EnrollmentState(), on_change)
        self.client = client
        self.gateway_url = gateway_url

    async def refresh(self) -> None:
        """Load the tokens (errors go to ``state.error``)."""

        async def work() -> None:
            doc = await self.client.list_enrollment_tokens()
            self._set(tokens=tuple(TokenRow.from_json(d) for d in doc["items"]))

        await self._load(work)

    async def create(self, description: str, ttl_hours: float | int | str) -> CreatedToken:
        """Make a token; it stays in ``state.created`` until :meth:`clear_created`."""
        text = description.strip()
        if len(text) > 200:
            raise ValidationError(
                "the description must be at most 200 characters",
                details={"field": "description"},
            )
        doc = await self.client.create_enrollment_token(text, _ttl_seconds(ttl_hours))
        token = str(doc["token"])
        created = CreatedToken(
            token=token,
            expires_at=when(doc.get("expires_at")),
            command=enroll_command(self.gateway_url, token),
            id=str(doc.get("id") or ""),
        )
        row = TokenRow.from_json({**doc, "state": "active", "created_at": doc.get("created_at")})
        self._set(created=created, tokens=(row, *self.state.tokens))
        return created

    def clear_created(self) -> None:
        """Forget the token just made (it was shown once)."""
        if self.state.created is not None:
            self._set(created=None)

    async def revoke(self, token_id: str) -> TokenRow:
        """Revoke an unused token; raises KeyVaultError."""
        row = TokenRow.from_json(await self.client.revoke_enrollment_token(token_id))
        self._set(tokens=tuple(row if t.id == token_id else t for t in self.state.tokens))
        return row
