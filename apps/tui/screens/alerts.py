"""Alerts: severity-coloured, live; acknowledge and resolve; looking at them marks them read."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from apps.core.navigation import area
from apps.core.timefmt import ago
from apps.core.viewmodels.alerts import AlertRow, AlertsState, AlertsViewModel
from apps.tui.screens.base import KeyVaultScreen
from apps.tui.widgets.tables import Column, fill_table, table_body
from apps.tui.widgets.tones import style_of

COLUMNS = (
    Column("Severity", "severity", 9),
    Column("State", "state", 13),
    Column("Vault", "vault", 24),
    Column("Message", "message", 60),
    Column("Raised", "raised", 9),
)
STATE_STYLE = {"open": "bold", "acknowledged": "", "resolved": "dim"}


def alert_cells(
    row: AlertRow, vault_name: str | None, now: Any, message: str | None = None
) -> tuple[Any, ...]:
    """The table cells of one alert, in :data:`COLUMNS` order (``message`` with names)."""
    dim = row.state == "resolved"
    severity = Text(row.severity, style="dim" if dim else style_of(row.severity))
    return (
        severity,
        Text(row.state, style=STATE_STYLE.get(row.state, "")),
        vault_name or row.vault_id or "—",
        Text(message or row.message, style="dim" if dim else ""),
        ago(row.raised_at, now),
    )


class AlertsScreen(KeyVaultScreen):
    """The organisation's alerts, newest first."""

    TITLE_TEXT = area("alerts").heading
    BINDINGS = [
        Binding("k", "acknowledge", "Acknowledge"),
        Binding("f", "resolve", "Resolve (fixed)"),
        Binding("t", "toggle_resolved", "Show/hide resolved"),
        Binding("f5,ctrl+r", "refresh", "Reload", key_display="F5"),
    ]

    @property
    def model(self) -> AlertsViewModel:
        """The shell's alerts view model."""
        return self.shell.alerts

    def compose_body(self) -> ComposeResult:
        """Summary line, error line, the table."""
        yield from table_body("alerts", COLUMNS)

    def on_mount(self) -> None:
        """Follow the view model; the alerts are now read."""
        self.watch_model(self.model.subscribe, self.show)
        self.show(self.model.state)
        self.query_one(DataTable).focus()

    def on_screen_resume(self) -> None:
        """Entering the screen marks every alert read (the header's count goes to 0)."""
        self.model.mark_read()

    def show(self, state: AlertsState) -> None:
        """Repaint from the state (alerts are few: a full repaint is cheap)."""
        if state.unread and self.is_current:
            self.model.mark_read()  # seen as it arrives
            return
        now = self.now()
        rows = []
        for row in state.rows:
            vault = self.shell.vaults.row(row.vault_id) if row.vault_id else None
            message = self.shell.names.humanize(row.message, row.vault_id)
            rows.append((row.id, alert_cells(row, vault.name if vault else None, now, message)))
        fill_table(self.query_one(DataTable), rows)
        live = sum(1 for r in state.rows if r.state != "resolved")
        text = f"{live} open or acknowledged"
        text += " · showing resolved too" if state.show_resolved else " · resolved hidden (t)"
        if not state.rows:
            text = "No alerts. " + ("" if state.show_resolved else "Press t to show resolved ones.")
        self.query_one("#summary", Static).update(text)
        error = self.query_one("#error", Static)
        error.display = bool(state.error)
        error.update(f"Could not refresh: {state.error}" if state.error else "")

    def _selected(self) -> AlertRow | None:
        alert_id = self._selected_id()
        return self.model.row(alert_id) if alert_id else None

    def _selected_id(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def action_acknowledge(self) -> None:
        """Acknowledge the selected alert (someone is on it)."""
        row = self._selected()
        if row is None or row.state != "open":
            self.notify("Select an open alert to acknowledge.", severity="warning")
            return
        self.act(lambda: self.model.acknowledge(row.id), done="Alert acknowledged.")

    def action_resolve(self) -> None:
        """Resolve the selected alert."""
        row = self._selected()
        if row is None or row.state == "resolved":
            self.notify("Select an alert that is not resolved yet.", severity="warning")
            return
        self.act(lambda: self.model.resolve(row.id), done="Alert resolved.")

    def action_toggle_resolved(self) -> None:
        """Show or hide resolved alerts."""
        self.model.set_show_resolved(not self.model.state.show_resolved)

    def action_refresh(self) -> None:
        """Reload the alerts from the control plane."""
        self.act(self.model.refresh, group="refresh")
