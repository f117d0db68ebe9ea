"""Secrets on one agent, read straight from it over mutual TLS; values masked until revealed."""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Static

from apps.core.clipboard import copied_message
from apps.core.forms import labels_text
from apps.core.keys import meaning
from apps.tui.screens.base import KeyVaultScreen
from apps.tui.screens.secret_form import SecretFormScreen
from apps.tui.widgets.clipboard import terminal_clipboard
from apps.tui.widgets.confirm import ConfirmScreen
from apps.tui.widgets.tables import Cell, CutTable, fill_table, selected_key, when

if TYPE_CHECKING:
    from apps.core.agents import AgentProfile
    from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel

MASK = "••••••••"
COLUMNS = ("Name", "State", "Value", "Ver.", "Labels", "Updated (UTC)")


#: the status line's reminder, spelled from the one key table
_KEY_HINT = " · ".join(
    f"{meaning(name).display} {word}"
    for name, word in (
        ("reveal or hide a value", "reveal/hide"),
        ("copy", "copy"),
        ("new", "new"),
        ("edit", "edit"),
        ("rotate", "rotate"),
        ("delete (can be undone)", "delete"),
        ("versions", "versions"),
    )
)


class SecretsScreen(KeyVaultScreen):
    """The secrets of one agent: filter, reveal/hide/copy, create, edit, rotate, delete."""

    TITLE_TEXT = "Secrets"
    DEFAULT_CSS = """
    SecretsScreen #secrets-bar { height: 3; padding: 0 1; }
    SecretsScreen #secrets-filter { width: 50; }
    SecretsScreen #secrets-agent { width: 1fr; padding: 1 0 0 2; color: $text-muted; }
    SecretsScreen #secrets { width: 1fr; height: 1fr; }
    SecretsScreen #versions-pane { width: 56; height: 1fr; border-left: solid $primary; display: none; }
    SecretsScreen #versions-pane.shown { display: block; }
    SecretsScreen #versions-title { padding: 0 1; text-style: bold; }
    SecretsScreen #versions { height: 1fr; }
    SecretsScreen #secrets-status { height: 1; padding: 0 1; color: $text-muted; }
    SecretsScreen #secrets-status.error { color: $error; }
    """
    BINDINGS = [
        # short words, so the whole set fits one footer line at 140 columns; the long meaning
        # is the tooltip, and `?` lists every key
        Binding(
            "ctrl+t",
            "toggle_reveal",
            "Reveal",
            key_display="ctrl+t",
            tooltip="Reveal or hide the value",
        ),
        Binding("c", "copy", "Copy", tooltip="Copy the value to the clipboard"),
        Binding("n", "new", "New", tooltip="New secret"),
        Binding("E", "edit", "Edit", tooltip="Edit: store a new version"),
        Binding("r", "rotate", "Rotate"),
        Binding("d", "delete", "Delete", tooltip="Delete (can be undone)"),
        Binding("U", "undelete", "Undelete", tooltip="Bring the selected deleted secret back"),
        Binding("D", "toggle_deleted", "Deleted", tooltip="Show or hide deleted secrets"),
        Binding("V", "toggle_versions", "Versions", tooltip="The selected secret's versions"),
        Binding("slash", "focus_filter", "Filter"),
        Binding("f5,ctrl+r", "refresh", "Reload", key_display="F5"),
        Binding("escape", "back", "Back", tooltip="Back to agents"),
    ]

    def __init__(self, agent: AgentProfile, model: AgentSecretsViewModel | None = None) -> None:
        super().__init__()
        self.agent = agent
        self.model: AgentSecretsViewModel | None = model
        self.TITLE_TEXT = f"Secrets on {agent.name}"
        self._deleted_shown = False  # whether the footer offers Undelete (check_action)

    def compose_body(self) -> ComposeResult:
        """Filter bar, the table and the versions panel, the status line."""
        with Horizontal(id="secrets-bar"):
            yield Input(placeholder="/ filter by name", id="secrets-filter")
            yield Static(f"{self.agent.name} · {self.agent.url} · mutual TLS", id="secrets-agent")
        with Horizontal():
            table = CutTable(COLUMNS, id="secrets")
            yield table
            with Vertical(id="versions-pane"):
                yield Static("Versions", id="versions-title")
                versions = CutTable(
                    ("Version", "Created", "Origin", ""), id="versions", zebra_stripes=False
                )
                yield versions
        yield Static("", id="secrets-status")

    async def on_mount(self) -> None:
        """Build the view model if needed (keyring read off the UI thread), paint and load."""
        self.query_one("#secrets", DataTable).focus()
        if self.model is None:
            try:
                self.model = await asyncio.to_thread(self.shell.agent_secrets, self.agent)
            except Exception as exc:  # a KeyVaultError: no token; shown, then back
                self.notify(getattr(exc, "message", str(exc)), severity="error")
                self.dismiss()
                return
        self.watch_model(self.model.subscribe, self.paint)
        self.paint(self.model.state)
        self.action_refresh()

    # ------------------------------------------------------------ painting
    def paint(self, state: Any) -> None:
        """Rows (masked unless revealed), the versions panel, the status line."""
        fill_table(
            self.query_one("#secrets", DataTable),
            ((_key(r), self._cells(r, state)) for r in state.visible),
        )
        fill_table(
            self.query_one("#versions", DataTable),
            ((str(v.version), _version_cells(v)) for v in state.versions),
        )
        if state.show_deleted != self._deleted_shown:
            self._deleted_shown = state.show_deleted
            self.refresh_bindings()  # Undelete is offered only while deleted secrets show
        status = self.query_one("#secrets-status", Static)
        status.set_class(bool(state.error), "error")
        count = len(state.visible)
        deleted = " (deleted shown)" if state.show_deleted else ""
        text = f"{count} secrets{deleted}{' · loading…' if state.loading else ''} · {_KEY_HINT}"
        status.update(f"⚠ {state.error}" if state.error else text)

    def _cells(self, row: Any, state: Any) -> tuple[Cell, ...]:
        if row.name in state.revealed and not row.deleted:
            value: Cell = Text(state.revealed[row.name], style="bold yellow")
        else:
            value = Text(MASK, style="dim")
        return (
            Text(row.name, style="dim strike") if row.deleted else row.name,
            Text("deleted", style="red") if row.deleted else Text("active", style="green"),
            value,
            str(row.version),
            labels_text(row.labels) or "—",
            when(row.updated_at),
        )

    # ------------------------------------------------------------ selection helpers
    def _selected_row(self) -> Any | None:
        key = selected_key(self.query_one("#secrets", DataTable))
        if key is None or self.model is None:
            return None
        return next((r for r in self.model.state.visible if _key(r) == key), None)

    def _selected(self) -> str | None:
        row = self._selected_row()
        return row.name if row is not None else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a secret edits it."""
        if event.data_table.id == "secrets":
            event.stop()
            self.action_edit()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Keep the versions panel on the highlighted secret."""
        if event.data_table.id != "secrets" or not self._versions_shown() or self.model is None:
            return
        if self._selected() != self.model.state.selected:
            self._load_versions()

    def _versions_shown(self) -> bool:
        return self.query_one("#versions-pane").has_class("shown")

    def _load_versions(self) -> None:
        name = self._selected()
        if name and self.model is not None:
            self.query_one("#versions-title", Static).update(f"Versions of {name}")
            self.act(lambda: self.model.versions(name), group="versions")  # type: ignore[union-attr]

    # ------------------------------------------------------------ actions
    def _run(self, result: Any) -> None:
        if inspect.isawaitable(result):
            self.run_worker(result, group="secrets-load", exclusive=True)

    def action_refresh(self) -> None:
        """Reload the list from the agent."""
        if self.model is not None:
            self._run(self.model.refresh())

    def action_reveal(self) -> None:
        """Fetch and show the selected secret's value."""
        name = self._selected()
        if name and self.model is not None:
            model = self.model
            self.act(lambda: model.reveal(name))

    def action_hide(self) -> None:
        """Mask the selected secret's value again."""
        name = self._selected()
        if name and self.model is not None:
            self.model.hide(name)

    def action_toggle_reveal(self) -> None:
        """Reveal the selected value, or mask it again when it is shown."""
        name = self._selected()
        if name and self.model is not None and name in self.model.state.revealed:
            self.action_hide()
        else:
            self.action_reveal()

    def action_copy(self) -> None:
        """Copy the selected value to the clipboard without showing it."""
        name = self._selected()
        if not name or self.model is None:
            return
        model = self.model

        async def work() -> None:
            clipboard = terminal_clipboard(self.app)
            clipboard.copy(await model.value_to_copy(name))
            self.notify(copied_message(name, clipboard.guard.clear_after))

        self.act(work)

    def action_new(self) -> None:
        """Open the create form."""
        if self.model is not None:
            self.app.push_screen(SecretFormScreen(self.model))

    def action_edit(self) -> None:
        """Open the form to write a new version of the selected secret."""
        row = self._selected_row()
        if row is not None and self.model is not None:
            self.app.push_screen(SecretFormScreen(self.model, row))

    def _confirm(self, question: str, yes: str, work: Any, done: str) -> None:
        def answered(answer: bool | None) -> None:
            if answer:
                self.act(work, done=done)

        self.app.push_screen(ConfirmScreen(question, yes=yes), answered)

    def action_rotate(self) -> None:
        """Rotate the selected secret (a new random value) after a confirmation."""
        name = self._selected()
        if name and self.model is not None:
            model = self.model
            self._confirm(
                f"Rotate {name}? A new value is generated now.",
                "Rotate",
                lambda: model.rotate(name),
                f"rotated {name}",
            )

    def action_delete(self) -> None:
        """Delete the selected secret (it can be undeleted) after a confirmation."""
        name = self._selected()
        if name and self.model is not None:
            model = self.model
            self._confirm(
                f"Delete {name}? You can undelete it later.",
                "Delete",
                lambda: model.delete(name),
                f"deleted {name}",
            )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Undelete only while deleted secrets are shown: nothing else could be undeleted."""
        if action == "undelete":
            return self._deleted_shown
        return True

    def action_undelete(self) -> None:
        """Bring the selected deleted secret back."""
        name = self._selected()
        if name and self.model is not None:
            model = self.model
            self.act(lambda: model.undelete(name), done=f"restored {name}")

    def action_toggle_deleted(self) -> None:
        """Show or hide deleted secrets."""
        if self.model is not None:
            self._run(self.model.set_show_deleted(not self.model.state.show_deleted))

    def action_toggle_versions(self) -> None:
        """Open or close the versions panel of the selected secret."""
        pane = self.query_one("#versions-pane")
        pane.toggle_class("shown")
        if self._versions_shown():
            self._load_versions()

    def action_focus_filter(self) -> None:
        """Jump to the filter box."""
        self.query_one("#secrets-filter", Input).focus()

    async def action_back(self) -> None:
        """Back to the table from the filter; from the table, back to the agents."""
        if isinstance(self.focused, Input):
            self.query_one("#secrets", DataTable).focus()
            return
        if self.model is not None:
            self._hide_all()
            await self.model.close()
        self.dismiss()

    @on(Input.Changed, "#secrets-filter")
    def _filter(self, event: Input.Changed) -> None:
        if self.model is not None:
            self.model.set_filter(event.value)

    @on(Input.Submitted, "#secrets-filter")
    def _filter_done(self) -> None:
        self.query_one("#secrets", DataTable).focus()

    def _hide_all(self) -> None:
        if self.model is not None:
            for name in list(self.model.state.revealed):
                self.model.hide(name)

    def on_screen_suspend(self) -> None:
        """Leaving the screen masks every value again."""
        self._hide_all()

    def on_unmount(self) -> None:
        """Drop subscriptions, then forget revealed values."""
        super().on_unmount()
        self._hide_all()


def _key(row: Any) -> str:
    """A row key (a name can be listed twice: live and deleted)."""
    return f"{row.name}\t{'deleted' if row.deleted else 'live'}"


def _version_cells(row: Any) -> tuple[Cell, ...]:
    current = Text("current", style="green") if row.current else Text("")
    return (f"v{row.version}", when(row.created_at), row.origin or "—", current)
