"""One vault: its facts, its secrets' metadata (names opened locally), rotate and resync."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from apps.core.forms import labels_text
from apps.core.rules import DASH, shown_status, text_or_dash
from apps.core.timefmt import ago, day
from apps.core.viewmodels.vault_detail import (
    InventoryRow,
    VaultDetailState,
    VaultDetailViewModel,
    command_text,
)
from apps.tui.screens.base import KeyVaultScreen, due_text, expires_text
from apps.tui.widgets.tables import Column, fill_table, table_body
from apps.tui.widgets.tones import style_of

COLUMNS = (
    Column("Name", "name", 28),
    Column("Labels", "labels", 26),
    Column("Ver", "version", 4),
    Column("Updated", "updated", 10),
    Column("Policy", "policy", 14),
    Column("Rotation", "rotation", 10),
    Column("Last rotated", "last_rotated", 12),
    Column("Next due", "next_due", 11),
)
FINAL_STATES = ("succeeded", "failed", "expired", "cancelled")


def inventory_cells(
    row: InventoryRow, now: Any, policies: dict[str, str] | None = None
) -> tuple[Any, ...]:
    """The table cells of one secret, in :data:`COLUMNS` order (``policies``: id → name)."""
    name = Text("🔒 sealed", style="dim italic") if row.sealed else Text(row.name)
    if row.deleted:
        name.stylize("strike dim")
    labels = labels_text(row.labels) or DASH
    return (
        name,
        Text(labels, style="dim") if row.sealed else labels,
        str(row.version),
        ago(row.updated_at, now),
        (policies or {}).get(row.policy_id, row.policy_id) if row.policy_id else "—",
        row.rotation_state or "—",
        day(row.last_rotated_at),
        due_text(row.next_due_at, now),
    )


#: the shell's NameBook.humanize: (text, vault id) → the text with names for ids
Humanize = Callable[[str, str | None], str]


def vault_facts(state: VaultDetailState, now: Any, humanize: Humanize) -> Text:
    """The lines above the table: name, status, last seen, version, certificate, commands
    (``humanize``: the shell's ``NameBook.humanize``, so the command log shows names)."""
    vault = state.vault
    if vault is None:
        return Text("Loading vault…" if state.loading else "Vault not loaded.", style="dim")
    status = shown_status(vault)
    text = Text()
    text.append(vault.name, style="bold")
    text.append(f"  {vault.id}  ", style="dim")
    text.append(status, style=style_of(status))
    text.append(f"   last seen {ago(vault.last_seen, now)}   agent {text_or_dash(vault.version)}")
    text.append("   certificate expires ")
    text.append_text(expires_text(vault.cert_expiry, now))
    text.append(f"   {len(state.items)} secrets")
    if state.commands:
        line = command_text(state.commands[0], humanize, vault.id)
        text.append(f"\nLast command: {line}", style="dim")
    return text


class VaultDetailScreen(KeyVaultScreen):
    """A vault's inventory; rotate a secret or resync the vault; live command results."""

    TITLE_TEXT = "Vault"
    BINDINGS = [
        Binding("escape,backspace", "back", "Back"),
        Binding("r", "rotate", "Rotate secret"),
        Binding("Y", "resync", "Resync vault"),
        Binding("f5,ctrl+r", "refresh", "Reload", key_display="F5"),
    ]

    def __init__(self, vault_id: str) -> None:
        super().__init__()
        self.vault_id = vault_id
        self._model: VaultDetailViewModel | None = None
        self._waiting: dict[str, str] = {}  # command id → what it was for

    @property
    def model(self) -> VaultDetailViewModel:
        """This screen's view model (kept referenced so the shell feeds it events)."""
        if self._model is None:
            self._model = self.shell.vault_detail(self.vault_id)
        return self._model

    def compose_body(self) -> ComposeResult:
        """Facts, key hint, error line, the inventory table."""
        yield Static(id="facts", classes="facts")
        yield Static(id="key-hint", classes="hint")
        yield Static(id="error", classes="error-line")
        yield from table_body("inventory", COLUMNS, status=False)

    def on_mount(self) -> None:
        """Follow the view model and load the vault."""
        self.watch_model(self.model.subscribe, self.show)
        self.show(self.model.state)
        self.query_one(DataTable).focus()
        self.act(self.model.refresh, group="refresh")
        policies = self.shell.policies
        self.watch_model(policies.subscribe, lambda _: self._fill(self.model.state, self.now()))
        if not policies.state.rows:
            self.act(policies.refresh, group="policies")  # to show policy names, not ids

    def show(self, state: VaultDetailState) -> None:
        """Repaint from the state; tell about commands that have just finished."""
        now = self.now()
        self.query_one("#facts", Static).update(vault_facts(state, now, self.shell.names.humanize))
        hint = self.query_one("#key-hint", Static)
        hint.display = not state.has_key and bool(state.items)
        hint.update(
            "Names and labels are sealed: import the organisation's metadata key on this "
            "machine (ctrl+k, or keyvault org metadata-key import FILE) to read them."
        )
        error = self.query_one("#error", Static)
        error.display = bool(state.error)
        error.update(f"Could not load: {state.error}" if state.error else "")
        self._fill(state, now)
        self._report_finished(state)

    def _fill(self, state: VaultDetailState, now: Any) -> None:
        policies = {p.id: p.name for p in self.shell.policies.state.rows}
        rows = ((r.secret_id, inventory_cells(r, now, policies)) for r in state.items)
        fill_table(self.query_one(DataTable), rows)

    def _report_finished(self, state: VaultDetailState) -> None:
        command_vault = state.vault.id if state.vault is not None else None
        for command in state.commands:
            what = self._waiting.get(command.id)
            if what is None or command.state not in FINAL_STATES:
                continue
            del self._waiting[command.id]
            ok = command.state == "succeeded"
            result = command.result and self.shell.names.humanize(command.result, command_vault)
            detail = f": {result}" if result else ""
            self.notify(
                f"{what} {command.state}{detail}",
                severity="information" if ok else "error",
                timeout=8,
            )

    def _selected_id(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _sent(self, what: str) -> Any:
        def done(command: dict[str, Any]) -> None:
            self._waiting[str(command.get("id"))] = what
            self.notify(f"{what} sent to the vault; waiting for its result…")
            self._report_finished(self.model.state)

        return done

    def action_back(self) -> None:
        """Back to the fleet."""
        self.app.pop_screen()

    def action_refresh(self) -> None:
        """Reload the vault and its inventory."""
        self.act(self.model.refresh, group="refresh")

    def action_rotate(self) -> None:
        """Rotate the selected secret now (after a confirmation)."""
        secret_id = self._selected_id()
        row = next((r for r in self.model.state.items if r.secret_id == secret_id), None)
        if row is None:
            self.notify("Select a secret to rotate.", severity="warning")
            return
        label = row.secret_id if row.sealed else row.name
        self.confirm(
            f"Rotate {label} on this vault now?\n\nThe agent makes a new version; readers get "
            "it on their next read.",
            lambda: self.act(
                lambda: self.model.rotate(row.secret_id), done=self._sent(f"Rotation of {label}")
            ),
            yes="Rotate",
        )

    def action_resync(self) -> None:
        """Ask the agent to send its whole inventory again."""
        self.act(self.model.resync, done=self._sent("Resync"))
