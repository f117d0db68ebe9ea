"""Rotation policies: a table kept live by policy events; create, edit, delete."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from apps.core.navigation import area
from apps.tui.screens.base import KeyVaultScreen
from apps.tui.screens.policy_form import PolicyFormScreen
from apps.tui.widgets.confirm import ConfirmScreen
from apps.tui.widgets.tables import Column, CutTable, fill_table, selected_key, when

COLUMNS: tuple[Column | str, ...] = (
    *("Name", "Selects", "Every", "Notice", "Rotator", "Vaults"),
    Column("Updated", "updated", keep=16),  # a cut timestamp says nothing
)


class PoliciesScreen(KeyVaultScreen):
    """The organisation's rotation policies."""

    TITLE_TEXT = area("policies").heading
    DEFAULT_CSS = """
    PoliciesScreen #policies { height: 1fr; }
    PoliciesScreen #policies-status { height: 1; padding: 0 1; color: $text-muted; }
    PoliciesScreen #policies-status.error { color: $error; }
    """
    BINDINGS = [
        Binding("n", "new", "New policy"),
        Binding("E", "edit", "Edit policy"),
        Binding("enter", "edit", "Edit policy", show=False),
        Binding("d", "delete", "Delete policy"),
        Binding("f5,ctrl+r", "refresh", "Reload", key_display="F5"),
    ]

    def compose_body(self) -> ComposeResult:
        """The status line and the table."""
        yield Static("", id="policies-status")
        yield CutTable(COLUMNS, id="policies")

    def on_mount(self) -> None:
        """Paint what the view model has and load the rest."""
        model = self.shell.policies
        self.watch_model(model.subscribe, self.paint)
        self.paint(model.state)
        self.query_one(DataTable).focus()
        self.action_refresh()

    def paint(self, state: Any) -> None:
        """Rows and the status line from the state."""
        table = self.query_one("#policies", DataTable)
        fill_table(
            table,
            (
                (
                    row.id,
                    (
                        row.name,
                        row.selector_text,
                        f"{row.interval_days} d",
                        f"{row.notice_days} d",
                        row.rotator,
                        self.shell.names.humanize(row.scope_text),
                        when(row.updated_at),
                    ),
                )
                for row in state.rows
            ),
        )
        status = self.query_one("#policies-status", Static)
        status.set_class(bool(state.error), "error")
        if state.error:
            status.update(f"⚠ {state.error}")
        elif state.loading and not state.rows:
            status.update("loading…")
        else:
            count = len(state.rows)
            status.update(
                f"{count} polic{'y' if count == 1 else 'ies'} · n new · E edit · d delete"
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a row edits it."""
        event.stop()
        self.action_edit()

    def action_refresh(self) -> None:
        """Reload from the server (errors go to the status line)."""
        self.run_worker(self.shell.policies.refresh(), group="refresh", exclusive=True)

    def action_new(self) -> None:
        """Open the empty form."""
        self.app.push_screen(PolicyFormScreen(self.shell.policies))

    def action_edit(self) -> None:
        """Open the form on the selected policy."""
        policy_id = selected_key(self.query_one("#policies", DataTable))
        if policy_id is None:
            return
        model = self.shell.policies
        self.app.push_screen(PolicyFormScreen(model, policy_id, model.draft_of(policy_id)))

    def action_delete(self) -> None:
        """Delete the selected policy after a confirmation."""
        policy_id = selected_key(self.query_one("#policies", DataTable))
        if policy_id is None:
            return
        row = next((r for r in self.shell.policies.state.rows if r.id == policy_id), None)
        name = row.name if row else policy_id

        def answered(yes: bool | None) -> None:
            if yes:
                self.act(lambda: self.shell.policies.delete(policy_id), done=f"deleted {name!r}")

        self.app.push_screen(
            ConfirmScreen(f"Delete the policy {name!r}? Agents stop rotating by it.", yes="Delete"),
            answered,
        )
