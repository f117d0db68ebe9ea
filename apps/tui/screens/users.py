"""Users of the organisation: invite, set a role, remove, reset a password, end sessions."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Input, Label, Select, Static

from apps.core.navigation import area
from apps.core.viewmodels.users import ROLES
from apps.tui.screens.base import KeyVaultScreen
from apps.tui.widgets.confirm import ConfirmScreen
from apps.tui.widgets.form import FORM_CSS, clear_errors, show_error
from apps.tui.widgets.tables import CutTable, fill_table, selected_key, when
from common.errors import KeyVaultError

COLUMNS = ("E-mail", "Role", "Since")


class UsersScreen(KeyVaultScreen):
    """The organisation's users (admins and owners manage them)."""

    TITLE_TEXT = area("users").heading
    DEFAULT_CSS = (
        FORM_CSS
        + """
    UsersScreen #user-form { height: auto; padding: 0 1; }
    UsersScreen #user-form Label { padding: 1 1 0 0; width: auto; color: $text-muted; }
    UsersScreen #email { width: 1fr; }
    UsersScreen #role { width: 18; }
    UsersScreen #user-errors { height: auto; padding: 0 1; }
    UsersScreen #issued { height: auto; margin: 0 1; padding: 0 1; border: thick $success; }
    UsersScreen #issued.hidden { display: none; }
    UsersScreen #users { height: 1fr; margin-top: 1; }
    UsersScreen #users-status { height: 1; padding: 0 1; color: $text-muted; }
    UsersScreen #users-status.error { color: $error; }
    """
    )
    BINDINGS = [
        Binding("n", "new", "Invite"),
        Binding("E", "role", "Set role"),
        Binding("x", "remove", "Remove"),
        Binding("w", "reset", "Reset password"),
        Binding("K", "end_sessions", "End sessions"),
        Binding("c", "copy", "Copy the command"),
        Binding("f5,ctrl+r", "refresh", "Reload", key_display="F5"),
    ]

    def compose_body(self) -> ComposeResult:
        """The invite form, the shown-once panel, the list."""
        with Horizontal(id="user-form"):
            yield Label("E-mail")
            yield Input(placeholder="new.operator@example.com", id="email")
            yield Label("Role")
            yield Select([(r, r) for r in ROLES], value="viewer", allow_blank=False, id="role")
            yield Button("Invite", id="invite", variant="primary")
        with Vertical(id="user-errors"):
            yield Static("", id="email-error", classes="field-error")
            yield Static("", id="form-error", classes="form-error")
        yield Static("", id="issued", classes="hidden")
        yield CutTable(COLUMNS, id="users")
        yield Static("", id="users-status")

    def on_mount(self) -> None:
        """Paint and load."""
        model = self.shell.users
        self.watch_model(model.subscribe, self.paint)
        self.paint(model.state)
        self.action_refresh()

    def paint(self, state: Any) -> None:
        """The token shown once, the list, the status line."""
        issued = state.issued
        panel = self.query_one("#issued", Static)
        panel.set_class(issued is None, "hidden")
        if issued is not None:
            panel.update(
                Text.assemble(
                    (f"{issued.kind.capitalize()} for {issued.email}", "bold"),
                    " — shown only now; they run:\n",
                    issued.command,
                    "\n(c copies it)",
                )
            )
        else:
            panel.update("")
        rows = (
            (u.id, (f"{u.email} (you)" if u.you else u.email, u.role, when(u.created_at)))
            for u in state.users
        )
        fill_table(self.query_one("#users", DataTable), rows)
        status = self.query_one("#users-status", Static)
        status.set_class(bool(state.error), "error")
        if self.shell.users.can_manage:
            text = f"{len(state.users)} users · r sets the role chosen above · x removes"
        else:
            text = f"you have {len(state.sessions)} live session(s); only admins manage users"
        status.update(f"⚠ {state.error}" if state.error else text)

    def action_refresh(self) -> None:
        """Reload the users."""
        self.run_worker(self.shell.users.refresh(), group="users-load", exclusive=True)

    def action_new(self) -> None:
        """Go to the e-mail field."""
        self.query_one("#email", Input).focus()

    def _role(self) -> str:
        return str(self.query_one("#role", Select).value)

    @on(Button.Pressed, "#invite")
    @on(Input.Submitted, "#email")
    def _invite(self) -> None:
        email = self.query_one("#email", Input).value
        clear_errors(self)
        self.run_worker(self._do_invite(email, self._role()), group="users-invite", exclusive=True)

    async def _do_invite(self, email: str, role: str) -> None:
        try:
            await self.shell.users.invite(email, role)
        except KeyVaultError as exc:
            if show_error(self, exc) is None:
                self.notify(exc.message, title="Failed", severity="error", timeout=8)
            return
        self.query_one("#email", Input).value = ""
        self.query_one("#users", DataTable).focus()
        self.notify("invitation created")

    def _selected(self) -> str | None:
        return selected_key(self.query_one("#users", DataTable))

    def action_role(self) -> None:
        """Give the selected user the role chosen in the form."""
        user_id, role = self._selected(), self._role()
        if user_id is not None:
            self.act(lambda: self.shell.users.set_role(user_id, role), done=f"role set to {role}")

    def _confirm(self, question: str, yes: str, work: Any, done: str) -> None:
        user_id = self._selected()
        if user_id is None:
            return
        row = self.shell.users.row(user_id)

        def answered(ok: bool | None) -> None:
            if ok:
                self.act(lambda: work(user_id), done=done)

        email = row.email if row else user_id
        self.app.push_screen(ConfirmScreen(question.format(email=email), yes=yes), answered)

    def action_remove(self) -> None:
        """Remove the selected user after a confirmation."""
        self._confirm(
            "Remove {email}? Their sessions end at once.",
            "Remove",
            self.shell.users.remove,
            "user removed",
        )

    def action_reset(self) -> None:
        """Reset the selected user's password after a confirmation."""
        self._confirm(
            "Lock {email}'s password and end their sessions?",
            "Reset",
            self.shell.users.reset_password,
            "password reset: give them the command shown",
        )

    def action_end_sessions(self) -> None:
        """End every session of the selected user after a confirmation."""
        self._confirm(
            "End every session of {email}?",
            "End sessions",
            self.shell.users.end_sessions,
            "sessions ended",
        )

    def action_copy(self) -> None:
        """Copy the command with the token."""
        issued = self.shell.users.state.issued
        if issued is None:
            self.notify("invite someone or reset a password first", severity="warning")
            return
        self.app.copy_to_clipboard(issued.command)
        self.notify("copied the command")

    def on_screen_suspend(self) -> None:
        """Leaving the screen forgets the token shown (it was shown once)."""
        self.shell.users.clear_issued()
