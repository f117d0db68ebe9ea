"""Secrets on one agent, over its API (mutual TLS + the agent token): list, reveal, change.

Values are held only in ``state.revealed`` after :meth:`AgentSecretsViewModel.reveal` and
dropped by :meth:`~AgentSecretsViewModel.hide` or any change to the secret; the state's
``repr`` never shows them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apps.core.agents import AgentProfile
from apps.core.filtering import matching
from apps.core.viewmodels.base import Listener, ViewModel, when
from apps.core.viewmodels.policies import parse_pairs
from common.client import AsyncAgentClient
from common.errors import KeyVaultError, ValidationError

# the agent's own rules (agent/secrets.py); it stays the authority
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
ID_RE = re.compile(r"^sec_[a-z2-7]{26}$")
LABEL_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,62}$")
MAX_NAME, MAX_LABELS, MAX_DESCRIPTION = 200, 32, 1000
PAGE = 1000


def _fail(message: str, name: str) -> ValidationError:
    return ValidationError(message, details={"field": name})


def check_name(name: str) -> str:
    """A valid secret name, or ValidationError (field ``name``)."""
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise _fail(f"name must be 1 to {MAX_NAME} characters", "name")
    if not NAME_RE.fullmatch(name) or ID_RE.fullmatch(name):
        raise _fail(
            "name may hold letters, digits, '_', '.', '-' in segments joined by single '/', "
            "each starting with a letter, digit or '_' (e.g. db/prod/password)",
            "name",
        )
    return name


def check_labels(labels: str | dict[str, str]) -> dict[str, str]:
    """Labels from ``"k=v, k=v"`` (or a dict), checked; ValidationError (field ``labels``)."""
    pairs = parse_pairs(labels, "labels") if isinstance(labels, str) else dict(labels)
    if len(pairs) > MAX_LABELS:
        raise _fail(f"at most {MAX_LABELS} labels", "labels")
    for key, value in pairs.items():
        if not LABEL_KEY_RE.fullmatch(key):
            raise _fail(f"label {key!r} must be lowercase letters, digits, _ . - (1-63)", "labels")
        if len(value) > 256 or not value.isprintable():
            raise _fail(f"label {key!r} must be printable, at most 256 characters", "labels")
    return pairs


def _check_description(text: str) -> str:
    if len(text) > MAX_DESCRIPTION or "\x00" in text:
        raise _fail(f"description must be at most {MAX_DESCRIPTION} characters", "description")
    return text


@dataclass(frozen=True)
class SecretRow:
    """One secret's metadata (never its value)."""

    name: str
    version: int
    labels: tuple[tuple[str, str], ...]
    updated_at: datetime | None
    deleted: bool
    id: str = ""
    description: str = ""

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SecretRow:
        """A row from the agent's secret metadata."""
        labels = doc.get("labels") or {}
        return cls(
            name=str(doc["name"]),
            version=int(doc.get("version") or 0),
            labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            updated_at=when(doc.get("updated_at")),
            deleted=bool(doc.get("deleted_at")),
            id=str(doc.get("id") or ""),
            description=str(doc.get("description") or ""),
        )


@dataclass(frozen=True)
class VersionRow:
    """One stored version of a secret (no value)."""

    version: int
    created_at: datetime | None
    origin: str
    current: bool


@dataclass(frozen=True)
class AgentSecretsState:
    """The agent's secrets; ``revealed`` maps name → value only after ``reveal``."""

    rows: tuple[SecretRow, ...] = ()
    visible: tuple[SecretRow, ...] = ()
    selected: str | None = None
    versions: tuple[VersionRow, ...] = ()
    revealed: dict[str, str] = field(default_factory=dict)
    show_deleted: bool = False
    filter: str = ""
    loading: bool = False
    error: str | None = None

    def __repr__(self) -> str:
        return (
            f"AgentSecretsState(rows={len(self.rows)}, selected={self.selected!r}, "
            f"revealed={sorted(self.revealed)!r} (values hidden), "
            f"show_deleted={self.show_deleted}, filter={self.filter!r}, "
            f"loading={self.loading}, error={self.error!r})"
        )


def _matching(rows: tuple[SecretRow, ...], text: str) -> tuple[SecretRow, ...]:
    return matching(rows, text, lambda r: r.name.lower())


class AgentSecretsViewModel(ViewModel[AgentSecretsState]):
    """Browse and change the secrets of one agent."""

    def __init__(
        self,
        agent: AgentProfile,
        token: str,
        on_change: Listener | None = None,
        *,
        client: Any = None,
    ) -> None:
        super().__init__(AgentSecretsState(), on_change)
        self.agent = agent
        self._token = token
        self._client = client
        #: told the agent's token names once, on the first load (the shell's NameBook)
        self.learn_tokens: Callable[[dict[str, str]], None] | None = None

    def __repr__(self) -> str:
        return f"AgentSecretsViewModel(agent={self.agent.name!r}, url={self.agent.url!r})"

    @property
    def client(self) -> Any:
        """The agent client, made on first use (a bad TLS file is then a ConfigError)."""
        if self._client is None:
            self._client = AsyncAgentClient(
                self.agent.url,
                self._token,
                ca_file=self.agent.ca_file,
                cert_file=self.agent.cert_file,
                key_file=self.agent.key_file,
            )
        return self._client

    async def close(self) -> None:
        """Close the agent client's connections."""
        if self._client is not None:
            await self._client.aclose()

    async def token_names(self) -> dict[str, str]:
        """The agent's token ids → names (needs an admin token; otherwise, or on any error,
        none): the audit log then names the workload that acted."""
        try:
            doc = await self.client.list_tokens()
        except KeyVaultError:
            return {}
        tokens = doc.get("tokens") if isinstance(doc, dict) else None
        return {
            str(t["id"]): str(t["name"])
            for t in tokens or ()
            if isinstance(t, dict) and t.get("id") and t.get("name")
        }

    # ------------------------------------------------------------ loading
    async def _all(self, deleted: bool) -> list[SecretRow]:
        rows: list[SecretRow] = []
        after: str | None = None
        while True:
            page = await self.client.list(after=after, limit=PAGE, deleted=deleted)
            rows += [SecretRow.from_json(d) for d in page["secrets"]]
            after = page.get("next")
            if not after:
                return rows

    async def refresh(self) -> None:
        """Load every secret (and the deleted ones when shown); errors go to ``state.error``."""

        async def work() -> None:
            rows = await self._all(False)
            if self.state.show_deleted:
                rows += await self._all(True)
            self._show(rows)
            learn, self.learn_tokens = self.learn_tokens, None
            if learn is not None:
                learn(await self.token_names())

        await self._load(work)

    def _show(self, rows: list[SecretRow]) -> None:
        ordered = tuple(sorted(rows, key=lambda r: (r.name, r.deleted)))
        self._set(rows=ordered, visible=_matching(ordered, self.state.filter))

    def _replace(self, row: SecretRow) -> SecretRow:
        """Put a changed secret's row in place and forget a value shown before."""
        rows = [r for r in self.state.rows if r.name != row.name]
        if self.state.show_deleted or not row.deleted:
            rows.append(row)
        self._forget(row.name)
        self._show(rows)
        return row

    def _forget(self, name: str) -> None:
        if name in self.state.revealed:
            self._set(revealed={k: v for k, v in self.state.revealed.items() if k != name})

    def set_filter(self, text: str) -> None:
        """Show only secrets whose name contains ``text`` (case-insensitive)."""
        self._set(filter=text, visible=_matching(self.state.rows, text))

    async def set_show_deleted(self, show: bool) -> None:
        """Also list deleted secrets (which can be undeleted), and reload."""
        self._set(show_deleted=show)
        await self.refresh()

    # ------------------------------------------------------------ values
    async def reveal(self, name: str) -> str:
        """Read the current value and keep it in ``state.revealed``; raises KeyVaultError."""
        value = str((await self.client.get(name))["value"])
        self._set(revealed={**self.state.revealed, name: value})
        return value

    async def value_to_copy(self, name: str) -> str:
        """Read the current value for the clipboard only: the state never holds it, so no
        listener (no screen) sees it; a value revealed before stays revealed. Raises
        KeyVaultError."""
        return str((await self.client.get(name))["value"])

    def hide(self, name: str) -> None:
        """Forget a revealed value."""
        self._forget(name)

    async def versions(self, name: str) -> tuple[VersionRow, ...]:
        """Select a secret and load its version history; raises KeyVaultError."""
        doc = await self.client.versions(name)
        rows = tuple(
            VersionRow(
                version=int(v["version"]),
                created_at=when(v.get("created_at")),
                origin=str(v.get("origin") or ""),
                current=bool(v.get("current")),
            )
            for v in doc["versions"]
        )
        self._set(selected=name, versions=rows)
        return rows

    # ------------------------------------------------------------ changes
    async def create(
        self, name: str, value: str, labels: str | dict[str, str] = "", description: str = ""
    ) -> SecretRow:
        """Create a secret at version 1; ValidationError (field-tagged) or the agent's error."""
        name = check_name(name)
        if not value:
            raise _fail("the value must not be empty", "value")
        checked = check_labels(labels)
        text = _check_description(description.strip())
        doc = await self.client.create(name, value, description=text, labels=checked or None)
        return self._replace(SecretRow.from_json(doc))

    async def update(
        self,
        name: str,
        value: str | None = None,
        labels: str | dict[str, str] | None = None,
        description: str | None = None,
    ) -> SecretRow:
        """Change a secret: a new version when ``value`` is given ('' or None keeps it)."""
        checked = check_labels(labels) if labels is not None else None
        text = _check_description(description.strip()) if description is not None else None
        if not value and checked is None and text is None:
            raise _fail("nothing to change: give a new value, labels or a description", "value")
        doc = await self.client.update(name, value or None, description=text, labels=checked)
        return self._replace(SecretRow.from_json(doc))

    async def rotate(self, name: str) -> SecretRow:
        """Give the secret a new value (its policy's rotator, or random); raises KeyVaultError."""
        return self._replace(SecretRow.from_json(await self.client.rotate(name)))

    async def delete(self, name: str) -> SecretRow:
        """Soft-delete a secret (undelete brings it back); raises KeyVaultError."""
        return self._replace(SecretRow.from_json(await self.client.delete(name)))

    async def undelete(self, name: str) -> SecretRow:
        """Bring a deleted secret back; raises KeyVaultError."""
        return self._replace(SecretRow.from_json(await self.client.undelete(name)))
