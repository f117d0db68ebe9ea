"""Home: what needs the operator now (alerts, failed and overdue rotations, offline agents,
certificates near expiry), most severe first; Enter goes where it is fixed."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from apps.core.navigation import area
from apps.core.timefmt import ago
from apps.core.viewmodels.home import NOUNS, HomeState, HomeViewModel, NeedItem
from apps.tui.screens.base import KeyVaultScreen
from apps.tui.widgets.tables import Column, fill_table, table_body
from apps.tui.widgets.tones import style_of

COLUMNS = (
    Column("Severity", "severity", 8),
    Column("Since", "since", 8),
    Column("What", "category", 20),
    Column("Problem", "title", None),  # last, so a narrow terminal cuts only its end
)


def need_cells(item: NeedItem, now: Any) -> tuple[Any, ...]:
    """The table cells of one item, in :data:`COLUMNS` order."""
    return (
        Text(item.severity, style=style_of(item.severity)),
        ago(item.since, now),
        NOUNS[item.category].capitalize(),
        Text(item.title),
    )


class HomeScreen(KeyVaultScreen):
    """The "needs me now" list over the shell's fleet and alerts."""

    TITLE_TEXT = area("home").heading
    BINDINGS = [
        Binding("enter", "open", "Go fix it", show=True),
        Binding("f5,ctrl+r", "refresh", "Reload", key_display="F5"),
    ]

    @property
    def model(self) -> HomeViewModel:
        """The shell's home view model."""
        return self.shell.home

    def compose_body(self) -> ComposeResult:
        """Summary line, error line, the list."""
        yield from table_body("needs", COLUMNS)

    def on_mount(self) -> None:
        """Follow the view model; relative times tick every 30 s."""
        self.watch_model(self.model.subscribe, self.show)
        self.show(self.model.state)
        self.query_one(DataTable).focus()
        self.set_interval(30, lambda: self.show(self.model.state))

    def show(self, state: HomeState) -> None:
        """Repaint from the state (a handful of rows: a full repaint is cheap)."""
        now = self.now()
        fill_table(self.query_one(DataTable), ((i.key, need_cells(i, now)) for i in state.items))
        summary = state.summary()
        if state.items:
            summary += " · Enter goes where it is fixed"
        self.query_one("#summary", Static).update(summary)
        error = self.query_one("#error", Static)
        error.display = bool(state.error)
        error.update(f"Could not refresh: {state.error}" if state.error else "")

    def _selected_key(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter (or a click) on a row opens where it is fixed."""
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        """The alerts screen for an alert, the vault's detail for an offline agent or a
        certificate."""
        key = self._selected_key()
        item = next((i for i in self.model.state.items if i.key == key), None)
        if item is None:
            self.notify("Nothing needs you now.", severity="information")
            return
        if item.goto == "vault" and item.vault_id:
            from apps.tui.screens.vault_detail import VaultDetailScreen

            self.app.push_screen(VaultDetailScreen(item.vault_id))
            return
        self.app.run_worker(self.app.run_action("mode('alerts')"), exclusive=False)

    def action_refresh(self) -> None:
        """Reload the fleet and the alerts."""
        self.act(self.model.refresh, group="refresh")
