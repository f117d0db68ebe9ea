"""Enrollment tokens: list, create (shown once, with the command to run), revoke.

``keyvault agent enroll --control-plane`` wants the control plane's *agent gateway* (it fetches
``/api/v1/agent/bootstrap`` there and registers through it), not the operator API's URL; the
gateway URL comes from the profile (``keyvault vaults enroll-token --gateway-url`` remembers it).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apps.core.viewmodels.base import Listener, ViewModel, when
from common import events
from common.errors import ValidationError

GATEWAY_PLACEHOLDER = "https://<control-plane-host>:8444"
MAX_TTL_HOURS = 7 * 24
VAULT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")  # as the control plane checks it


def enroll_command(
    gateway_url: str | None, token: str, name: str | None = None, key_file: str | None = None
) -> str:
    """The exact line to run on the agent host: the gateway, the token, the vault's name and
    the metadata-key step (``--metadata-key-file``, the file copied next to it) when given."""
    target = shlex.quote(gateway_url.strip().rstrip("/")) if gateway_url else GATEWAY_PLACEHOLDER
    line = f"keyvault agent enroll --control-plane {target} --token {shlex.quote(token)}"
    if name and name.strip():
        line += f" --name {shlex.quote(name.strip())}"
    if key_file:
        line += f" --metadata-key-file {shlex.quote(key_file)}"
    return line


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


FOLLOW_STAGES = {
    "waiting": "waiting for the agent to enroll with the token",
    "enrolled": "enrolled; waiting for the agent to connect",
    "connected": "connected; waiting for its first inventory",
    "ready": "ready",
    "refused": "the control plane refused the agent",
}


@dataclass(frozen=True)
class Follow:
    """A new agent followed from its token to its first inventory (or the refusal's reason)."""

    token_id: str
    name: str | None
    stage: str = "waiting"
    vault_id: str | None = None
    secrets: int | None = None
    reason: str | None = None

    @property
    def text(self) -> str:
        """One line for the screen: the stage, and the reason or the secret count."""
        base = FOLLOW_STAGES[self.stage]
        if self.stage == "refused" and self.reason:
            return f"{base}: {self.reason}"
        if self.stage == "ready":
            return f"ready: {self.secrets or 0} secret{'' if self.secrets == 1 else 's'} reported"
        return base


@dataclass(frozen=True)
class EnrollmentState:
    """The organisation's tokens (newest first), the one just created, the agent followed."""

    tokens: tuple[TokenRow, ...] = ()
    created: CreatedToken | None = None
    follow: Follow | None = None
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


#: what moves a followed agent once its vault is known; at most EARLY_KEPT such events
#: are kept while it is not
_FOLLOWED = frozenset(
    {events.VAULT_STATUS.name, events.VAULT_REFUSED.name, events.INVENTORY_CHANGED.name}
)
EARLY_KEPT = 50


class EnrollmentViewModel(ViewModel[EnrollmentState]):
    """Make single-use enrollment tokens for new agents."""

    def __init__(
        self, client: Any, gateway_url: str | None, on_change: Listener | None = None
    ) -> None:
        super().__init__(EnrollmentState(), on_change)
        self.client = client
        self.gateway_url = gateway_url
        #: the key file the command names (None: the organisation has no metadata key yet)
        self.key_file: str | None = None
        #: events about some vault that arrived before the followed agent's vault id was
        #: known (its registration still being looked up): replayed once it is
        self._early: list[tuple[str, dict[str, Any]]] = []

    async def refresh(self) -> None:
        """Load the tokens (errors go to ``state.error``)."""

        async def work() -> None:
            doc = await self.client.list_enrollment_tokens()
            self._set(tokens=tuple(TokenRow.from_json(d) for d in doc["items"]))

        await self._load(work)

    async def create(
        self, description: str, ttl_hours: float | int | str, name: str | None = None
    ) -> CreatedToken:
        """Make a token; it stays in ``state.created`` until :meth:`clear_created`, and the
        agent that uses it is followed in ``state.follow``. ``name`` names the new vault."""
        text = description.strip()
        vault_name = (name or "").strip() or None
        if len(text) > 200:
            raise ValidationError(
                "the description must be at most 200 characters",
                details={"field": "description"},
            )
        if vault_name is not None and not VAULT_NAME.fullmatch(vault_name):
            raise ValidationError(
                "the vault name must be 1-100 letters, digits, '.', '_' or '-'",
                details={"field": "name"},
            )
        ttl = _ttl_seconds(ttl_hours)
        doc = await self.client.create_enrollment_token(text or (vault_name or ""), ttl)
        token = str(doc["token"])
        gateway = self.gateway_url or doc.get("gateway_url")  # yours first, else the real one
        created = CreatedToken(
            token=token,
            expires_at=when(doc.get("expires_at")),
            command=enroll_command(gateway, token, vault_name, self.key_file),
            id=str(doc.get("id") or ""),
        )
        row = TokenRow.from_json({**doc, "state": "active", "created_at": doc.get("created_at")})
        follow = Follow(created.id, vault_name)
        self._early = []
        self._set(created=created, tokens=(row, *self.state.tokens), follow=follow)
        return created

    def needs(self, kind: str, data: dict[str, Any]) -> bool:
        """Whether a stream event may move the agent being followed."""
        follow = self.state.follow
        if follow is None or follow.stage in ("ready",):
            return False
        if follow.vault_id is None:
            return kind in _FOLLOWED or kind == events.VAULT_REGISTERED.name
        return data.get("vault_id") == follow.vault_id

    async def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Move the followed agent along: registered → enrolled, online → connected, its
        inventory → ready; a refusal shows its reason."""
        follow = self.state.follow
        if follow is None or not self.needs(kind, data):
            return
        if follow.vault_id is None and kind != events.VAULT_REGISTERED.name:
            self._early = [*self._early[-(EARLY_KEPT - 1) :], (kind, data)]
            return  # which vault is ours is not known yet (a refusal can come that fast)
        if kind == events.VAULT_REGISTERED.name:
            await self.refresh()  # the token now names the vault it enrolled
            mine = next((t for t in self.state.tokens if t.id == follow.token_id), None)
            if mine is not None and mine.vault_id:
                self._follow(stage="enrolled", vault_id=mine.vault_id)
                early, self._early = self._early, []
                for then_kind, then_data in early:
                    if then_data.get("vault_id") == mine.vault_id:
                        await self.on_event(then_kind, then_data)
        elif kind == events.VAULT_STATUS.name and data.get("status") == "online":
            if follow.stage in ("waiting", "enrolled", "refused"):
                self._follow(stage="connected", reason=None)
        elif kind == events.VAULT_REFUSED.name:
            self._follow(stage="refused", reason=str(data.get("message") or data.get("code")))
        elif kind == events.INVENTORY_CHANGED.name:
            count = data.get("secrets")
            self._follow(stage="ready", secrets=count if isinstance(count, int) else None)

    def _follow(self, **changes: Any) -> None:
        follow = self.state.follow
        if follow is not None:
            self._set(follow=dataclasses.replace(follow, **changes))

    def clear_created(self) -> None:
        """Forget the token just made (it was shown once)."""
        if self.state.created is not None:
            self._set(created=None)

    async def revoke(self, token_id: str) -> TokenRow:
        """Revoke an unused token; raises KeyVaultError."""
        row = TokenRow.from_json(await self.client.revoke_enrollment_token(token_id))
        self._set(tokens=tuple(row if t.id == token_id else t for t in self.state.tokens))
        return row
