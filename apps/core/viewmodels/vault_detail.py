"""One vault: its status, its secrets' metadata (names opened locally) and the commands sent to it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from apps.core.intents import IntentMaker
from apps.core.labels import LabelOpener
from apps.core.viewmodels.base import Listener, ViewModel, when
from apps.core.viewmodels.vaults import VaultRow
from common import events
from common.cpclient import AsyncControlPlaneClient

SEALED_NAME = "(sealed)"
MAX_COMMANDS = 50


@dataclass(frozen=True)
class InventoryRow:
    """One secret of the vault: metadata only, its name opened with the metadata key."""

    secret_id: str
    name: str
    sealed: bool
    labels: tuple[tuple[str, str], ...]
    version: int
    updated_at: datetime | None
    policy_id: str | None
    rotation_state: str | None
    last_rotated_at: datetime | None
    next_due_at: datetime | None
    deleted: bool

    @classmethod
    def from_json(cls, doc: dict[str, Any], opener: LabelOpener) -> InventoryRow:
        """A row from the API's inventory item; a label that does not open shows as sealed."""
        opened = opener.open(doc)
        sealed = opened.state != "open"
        rotation = doc.get("rotation") if isinstance(doc.get("rotation"), dict) else {}
        assert isinstance(rotation, dict)
        return cls(
            secret_id=str(doc["secret_id"]),
            name=SEALED_NAME if sealed else opened.display,
            sealed=sealed,
            labels=tuple(sorted(opened.labels.items())),
            version=int(doc.get("version") or 0),
            updated_at=when(doc.get("updated_at")),
            policy_id=doc.get("policy_id"),
            rotation_state=rotation.get("state"),
            last_rotated_at=when(rotation.get("last_rotated_at")),
            next_due_at=when(rotation.get("next_due_at")),
            deleted=doc.get("deleted_at") is not None,
        )


@dataclass(frozen=True)
class CommandRow:
    """A command sent to the vault (rotate or resync) and how it went."""

    id: str
    command: str
    secret_id: str | None
    state: str
    result: str | None
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_json(cls, doc: dict[str, Any], opened: dict[str, Any] | None = None) -> CommandRow:
        """A row from the API's (or the stream's) command object; a sealed command shows
        ``opened`` (its intent's body, opened locally) when there is one."""
        if opened is not None:
            doc = {**doc, "command": opened.get("command"), "args": opened.get("args")}
        args = doc.get("args") if isinstance(doc.get("args"), dict) else {}
        assert isinstance(args, dict)
        return cls(
            id=str(doc["id"]),
            command=str(doc.get("command") or ""),
            secret_id=args.get("secret_id"),
            state=str(doc.get("state") or "pending"),
            result=doc.get("result"),
            created_at=when(doc.get("created_at")),
            updated_at=when(doc.get("updated_at")),
        )


@dataclass(frozen=True)
class VaultDetailState:
    """The vault, its secrets, whether names can be opened, and the latest commands."""

    vault: VaultRow | None = None
    items: tuple[InventoryRow, ...] = ()
    has_key: bool = False
    loading: bool = False
    error: str | None = None
    commands: tuple[CommandRow, ...] = ()


class VaultDetailViewModel(ViewModel[VaultDetailState]):
    """The vault detail screen: load, rotate a secret, resync, follow command results."""

    def __init__(
        self,
        client: AsyncControlPlaneClient,
        vault_id: str,
        opener: LabelOpener,
        on_change: Listener | None = None,
    ) -> None:
        super().__init__(VaultDetailState(has_key=opener.has_key), on_change)
        self.client = client
        self.vault_id = vault_id
        self.opener = opener
        self.intents = IntentMaker(lambda: opener.key)

    def _opened(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A command with its sealed intent opened locally (as it is when it cannot be)."""
        body = self.intents.open(doc["intent"]) if "intent" in doc else None
        return {**doc, "command": body.get("command"), "args": body.get("args")} if body else doc

    def _command_row(self, doc: dict[str, Any]) -> CommandRow:
        return CommandRow.from_json(self._opened(doc))

    async def refresh(self) -> None:
        """Load the vault, its whole inventory and its latest commands."""

        async def items() -> list[dict[str, Any]]:
            return [d async for d in self.client.iter_inventory(self.vault_id)]

        async def commands() -> list[dict[str, Any]]:
            return [d async for d in self.client.iter_commands(self.vault_id)]

        async def work() -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
            vault, inv, cmds = await asyncio.gather(
                self.client.get_vault(self.vault_id), items(), commands()
            )
            return vault, inv, cmds

        loaded = await self._load(work)
        if loaded is None:
            return
        vault, inv, cmds = loaded
        rows = [InventoryRow.from_json(d, self.opener) for d in inv]
        rows.sort(key=lambda r: (r.sealed, r.name.lower(), r.secret_id))
        self._set(
            vault=VaultRow.from_json(vault),
            items=tuple(rows),
            has_key=self.opener.has_key,
            commands=_latest([self._command_row(c) for c in cmds]),
        )

    async def rotate(self, secret_id: str) -> dict[str, Any]:
        """Ask the agent to rotate one secret now (a sealed command); returns the command
        (raises on failure, e.g. without the metadata key)."""
        body = self.intents.command(self.vault_id, "rotate", {"secret_id": secret_id})
        command = self._opened(await self.client.send_command(self.vault_id, body))
        self._command(command)
        return command

    async def resync(self) -> dict[str, Any]:
        """Ask the agent to send its whole inventory again (a sealed command)."""
        body = self.intents.command(self.vault_id, "resync", {})
        command = self._opened(await self.client.send_command(self.vault_id, body))
        self._command(command)
        return command

    def _command(self, doc: dict[str, Any]) -> bool:
        row = self._command_row(doc)
        kept = [c for c in self.state.commands if c.id != row.id]
        if row in self.state.commands:
            return False
        self._set(commands=_latest([*kept, row]))
        return True

    def apply_event(self, kind: str, data: dict[str, Any]) -> bool:
        """Apply ``command.result`` and ``vault.status`` for this vault; True if changed."""
        if data.get("vault_id") != self.vault_id:
            return False
        if kind == events.COMMAND_RESULT.name and isinstance(data.get("id"), str):
            return self._command(data)
        vault = self.state.vault
        if (
            kind == events.VAULT_STATUS.name
            and vault is not None
            and data.get("status") != vault.status
        ):
            status = str(data.get("status"))
            revoked = vault.revoked or status == "revoked"
            self._set(vault=replace(vault, status=status, revoked=revoked))
            return True
        return False


def _latest(rows: list[CommandRow]) -> tuple[CommandRow, ...]:
    """The newest commands first, at most :data:`MAX_COMMANDS`."""
    rows.sort(key=lambda c: c.id, reverse=True)
    return tuple(rows[:MAX_COMMANDS])


def command_text(
    command: CommandRow, humanize: Callable[[str, str | None], str], vault: str
) -> str:
    """One line of the command log with names, not ids: "rotate db/password: succeeded — v2".

    ``humanize`` is the shell's ``NameBook.humanize``; ``vault`` the id of the vault it ran on.
    """
    target = f" {humanize(command.secret_id, vault)}" if command.secret_id else ""
    result = f" — {humanize(command.result, vault)}" if command.result else ""
    return f"{command.command}{target}: {command.state}{result}"
