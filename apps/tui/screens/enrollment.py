"""Enrollment tokens: make one for a new agent, show it once with the command; list and revoke."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, Static

from apps.core.navigation import area
from apps.tui.screens.base import KeyVaultScreen
from apps.tui.widgets.confirm import ConfirmScreen
from apps.tui.widgets.form import FORM_CSS, clear_errors, show_error
from apps.tui.widgets.tables import Cell, Column, CutTable, fill_table, selected_key, when
from common.errors import KeyVaultError

COLUMNS: tuple[Column | str, ...] = (
    *("Description", "State"),
    *(Column(title, title.lower(), keep=16) for title in ("Created", "Expires", "Used")),
    "Vault",
)
STATE_STYLE = {"active": "green", "used": "dim", "expired": "yellow", "revoked": "red"}


class EnrollmentScreen(KeyVaultScreen):
    """Enroll a new agent: a single-use token and the exact command to run on its host."""

    TITLE_TEXT = area("enrollment").heading
    DEFAULT_CSS = (
        FORM_CSS
        + """
    EnrollmentScreen #enroll-form, EnrollmentScreen #enroll-form-2 { height: auto; padding: 0 1; }
    EnrollmentScreen #enroll-form Label, EnrollmentScreen #enroll-form-2 Label {
        padding: 1 1 0 0; width: auto; color: $text-muted;
    }
    EnrollmentScreen #description { width: 1fr; }
    EnrollmentScreen #name { width: 1fr; }
    EnrollmentScreen #created-follow { text-style: bold; }
    EnrollmentScreen #ttl_hours { width: 12; }
    EnrollmentScreen #create { margin-left: 1; }
    EnrollmentScreen #enroll-errors { height: auto; padding: 0 1; }
    EnrollmentScreen #created {
        height: auto; margin: 0 1; padding: 0 1; border: thick $success; display: none;
    }
    EnrollmentScreen #created.shown { display: block; }
    EnrollmentScreen #created-command { background: $boost; padding: 0 1; margin: 1 0; }
    EnrollmentScreen #created-note { color: $text-muted; }
    EnrollmentScreen #tokens { height: 1fr; margin-top: 1; }
    EnrollmentScreen #tokens-status { height: 1; padding: 0 1; color: $text-muted; }
    EnrollmentScreen #tokens-status.error { color: $error; }
    """
    )
    BINDINGS = [
        Binding("n", "new", "New token"),
        Binding("c", "copy", "Copy the command"),
        Binding("x", "revoke", "Revoke token"),
        Binding("f5,ctrl+r", "refresh", "Reload", key_display="F5"),
        Binding("escape", "focus_table", "Back to the list", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        """The create form, the shown-once panel, the list."""
        with Horizontal(id="enroll-form"):  # two short rows: usable at 80 columns
            yield Label("Vault name")
            yield Input(placeholder="e.g. billing-prod", id="name")
            yield Label("Valid (hours)")
            yield Input("24", id="ttl_hours")
            yield Button("Create token", id="create", variant="primary")
        with Horizontal(id="enroll-form-2"):
            yield Label("Description")
            yield Input(placeholder="e.g. billing-prod host 2", id="description")
        with Vertical(id="enroll-errors"):
            yield Static("", id="name-error", classes="field-error")
            yield Static("", id="description-error", classes="field-error")
            yield Static("", id="ttl_hours-error", classes="field-error")
            yield Static("", id="form-error", classes="form-error")
        with Vertical(id="created"):
            yield Static("", id="created-title")
            yield Static("", id="created-command")
            yield Static("", id="created-note")
            yield Static("", id="created-follow")
        table = CutTable(COLUMNS, id="tokens")
        yield table
        yield Static("", id="tokens-status")

    def on_mount(self) -> None:
        """Paint and load."""
        model = self.shell.enrollment
        self.watch_model(model.subscribe, self.paint)
        self.paint(model.state)
        self.query_one("#name", Input).focus()
        self.action_refresh()

    def paint(self, state: Any) -> None:
        """The created-token panel (while there is one), the list, the status line."""
        panel = self.query_one("#created")
        created = state.created
        panel.set_class(created is not None, "shown")
        if created is not None:
            self.query_one("#created-title", Static).update(
                Text.assemble(
                    ("Token created. ", "bold"),
                    "It is shown only now — run this on the new agent's host:",
                )
            )
            self.query_one("#created-command", Static).update(Text(created.command))
            self.query_one("#created-note", Static).update(
                f"single use · expires {when(created.expires_at)} UTC · c copies the command"
            )
        else:
            self.query_one("#created-command", Static).update("")
        follow = state.follow
        self.query_one("#created-follow", Static).update(
            Text(f"New agent: {follow.text}", style=_FOLLOW_STYLE.get(follow.stage, ""))
            if follow is not None
            else ""
        )
        names = self.shell.names
        fill_table(
            self.query_one("#tokens", DataTable),
            ((t.id, _cells(t, names.vault(t.vault_id))) for t in state.tokens),
        )
        status = self.query_one("#tokens-status", Static)
        status.set_class(bool(state.error), "error")
        active = sum(1 for t in state.tokens if t.state == "active")
        count = len(state.tokens)
        text = f"{count} token{'' if count == 1 else 's'}, {active} active · x revokes the selected one"
        status.update(f"⚠ {state.error}" if state.error else text)

    def action_refresh(self) -> None:
        """Reload the tokens."""
        self.run_worker(self.shell.enrollment.refresh(), group="enroll-load", exclusive=True)

    def action_new(self) -> None:
        """Go to the form's first field."""
        self.query_one("#name", Input).focus()

    def action_focus_table(self) -> None:
        """Back to the list."""
        self.query_one("#tokens", DataTable).focus()

    @on(Button.Pressed, "#create")
    @on(Input.Submitted)
    def _create(self) -> None:
        name = self.query_one("#name", Input).value
        description = self.query_one("#description", Input).value
        ttl = self.query_one("#ttl_hours", Input).value
        clear_errors(self)
        self.run_worker(
            self._do_create(name, description, ttl), group="enroll-create", exclusive=True
        )

    async def _do_create(self, name: str, description: str, ttl: str) -> None:
        try:
            await self.shell.enrollment.create(description, ttl, name=name)
        except KeyVaultError as exc:
            if show_error(self, exc) is None:
                self.notify(exc.message, title="Failed", severity="error", timeout=8)
            return
        self.query_one("#description", Input).value = ""
        self.query_one("#name", Input).value = ""
        self.query_one("#tokens", DataTable).focus()  # the form is done; `c` copies the command
        self.notify("enrollment token created")

    def action_copy(self) -> None:
        """Copy the enroll command (with the token) to the clipboard."""
        created = self.shell.enrollment.state.created
        if created is None:
            self.notify("create a token first", severity="warning")
            return
        self.app.copy_to_clipboard(created.command)
        self.notify("copied the enroll command")

    def action_revoke(self) -> None:
        """Revoke the selected token after a confirmation."""
        token_id = selected_key(self.query_one("#tokens", DataTable))
        if token_id is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.act(lambda: self.shell.enrollment.revoke(token_id), done="token revoked")

        self.app.push_screen(
            ConfirmScreen("Revoke this enrollment token? No agent can use it after.", yes="Revoke"),
            answered,
        )

    def on_screen_suspend(self) -> None:
        """Leaving the screen forgets the token shown (it was shown once)."""
        self.shell.enrollment.clear_created()

    def on_unmount(self) -> None:
        """Drop subscriptions, then forget the token shown."""
        super().on_unmount()
        self.shell.enrollment.clear_created()


_FOLLOW_STYLE = {"ready": "bold green", "refused": "bold red", "connected": "green"}


def _cells(row: Any, vault_name: str) -> tuple[Cell, ...]:
    return (
        row.description or "—",
        Text(row.state, style=STATE_STYLE.get(row.state, "")),
        when(row.created_at),
        when(row.expires_at),
        when(row.used_at),
        vault_name or "—",
    )
