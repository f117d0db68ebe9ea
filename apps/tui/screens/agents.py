"""The ``s`` mode: saved agent connections, a connect form, and the way into an agent's secrets.

Secrets are read straight from an agent over mutual TLS, never through the control plane, so
each agent is saved with its URL, TLS files (paths) and API token (in the OS keyring).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Input, Static

from apps.core.agents import AgentProfile
from apps.core.forms import AGENT_FORM
from apps.core.navigation import area
from apps.tui.screens.base import KeyVaultScreen
from apps.tui.widgets.confirm import ConfirmScreen
from apps.tui.widgets.form import FORM_CSS, clear_errors, field_row, show_error
from apps.tui.widgets.tables import CutTable, fill_table, selected_key
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel

#: the connect form's fields but the token (a password box kept apart from the profile)
FIELDS = tuple(f for f in AGENT_FORM.fields if f.kind != "secret")
TOKEN = AGENT_FORM.field("token")


class AgentsScreen(KeyVaultScreen):
    """Saved agents on the left, the connect form on the right."""

    TITLE_TEXT = area("secrets").heading
    DEFAULT_CSS = (
        FORM_CSS
        + """
    AgentsScreen #agents-pane { width: 1fr; padding: 0 1; }
    AgentsScreen #agents { height: 1fr; }
    AgentsScreen #agents-help { height: auto; color: $text-muted; padding: 1 0 0 0; }
    AgentsScreen #connect {
        width: 60%; max-width: 76; height: 1fr; border: round $primary; padding: 0 1;
    }
    AgentsScreen #connect .form-row > Label { width: 14; }
    """
    )
    BINDINGS = [
        Binding("enter", "open", "Open secrets"),
        Binding("n", "new", "Connect an agent"),
        Binding("x", "remove", "Remove connection"),
        Binding("ctrl+s", "save", "Save connection"),
        Binding("escape", "focus_list", "Back to the list", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        """The list and the form."""
        with Horizontal():
            with Vertical(id="agents-pane"):
                table = CutTable(("Name", "URL", "TLS files"), id="agents", zebra_stripes=False)
                yield table
                yield Static(
                    "enter: open its secrets · n: connect an agent · x: remove\n"
                    "Secrets are fetched from the agent itself over mutual TLS.",
                    id="agents-help",
                )
            with VerticalScroll(id="connect"):
                yield Static("Connect an agent", classes="form-title")
                for spec in FIELDS:
                    box = Input(placeholder=spec.placeholder, id=spec.name)
                    yield from field_row(spec.label, spec.name, box, spec.help)
                token = Input(placeholder=TOKEN.placeholder, password=True, id=TOKEN.name)
                yield from field_row(TOKEN.label, TOKEN.name, token, TOKEN.help)
                yield Static("", id="form-error", classes="form-error")
                with Horizontal(classes="form-buttons"):
                    yield Button("Save", id="save", variant="primary")

    def on_mount(self) -> None:
        """Load the saved agents (a file and the keyring: off the UI thread)."""
        self.query_one("#agents", DataTable).focus()
        self.reload()

    def reload(self) -> None:
        """Re-read the saved agents."""

        async def work() -> list[AgentProfile]:
            return await asyncio.to_thread(self.shell.agents.list)

        self.act(work, done=self._paint, group="agents-load")

    def _paint(self, agents: list[AgentProfile]) -> None:
        self._agents = {a.name: a for a in agents}
        fill_table(
            self.query_one("#agents", DataTable),
            ((a.name, (a.name, a.url, _tls_text(a))) for a in agents),
        )
        if not agents:
            self.query_one("#name", Input).focus()

    def _selected(self) -> AgentProfile | None:
        name = selected_key(self.query_one("#agents", DataTable))
        return getattr(self, "_agents", {}).get(name) if name else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a row opens it."""
        event.stop()
        self.action_open()

    def action_open(self) -> None:
        """Open the selected agent's secrets (its token is read from the keyring first)."""
        agent = self._selected()
        if agent is None:
            return
        from apps.tui.screens.secrets import SecretsScreen

        async def work() -> AgentSecretsViewModel:
            return await asyncio.to_thread(self.shell.agent_secrets, agent)

        def opened(model: AgentSecretsViewModel) -> None:
            self.app.push_screen(SecretsScreen(agent, model))

        self.act(work, done=opened)

    def action_new(self) -> None:
        """Start the connect form."""
        self.query_one("#name", Input).focus()

    def action_focus_list(self) -> None:
        """Back to the list."""
        self.query_one("#agents", DataTable).focus()

    @on(Button.Pressed, "#save")
    @on(Input.Submitted)
    def action_save(self) -> None:
        """Check the form and save the connection (token to the keyring)."""
        values = {f.name: self.query_one(f"#{f.name}", Input).value for f in FIELDS}
        token = self.query_one("#token", Input).value
        self.run_worker(self._save(values, token), group="agents-save", exclusive=True)

    async def _save(self, values: dict[str, str], token: str) -> None:
        def save() -> AgentProfile:
            return self.shell.agents.save(AgentProfile.from_form(values), token)

        try:
            profile = await asyncio.to_thread(save)
        except KeyVaultError as exc:
            field = show_error(self, exc)
            if field:
                self.query_one(f"#{field}").focus()
            return
        clear_errors(self)
        for spec in FIELDS:
            self.query_one(f"#{spec.name}", Input).value = ""
        self.query_one("#token", Input).value = ""
        self.notify(f"saved agent {profile.name!r}")
        self.reload()
        self.action_focus_list()

    def action_remove(self) -> None:
        """Forget the selected connection (and its token) after a confirmation."""
        agent = self._selected()
        if agent is None:
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return

            async def work() -> None:
                await asyncio.to_thread(self.shell.agents.remove, agent.name)

            def removed(_: None) -> None:
                self.notify(f"removed {agent.name!r}")
                self.reload()

            self.act(work, done=removed)

        self.app.push_screen(
            ConfirmScreen(f"Remove the connection {agent.name!r} and its token?", yes="Remove"),
            answered,
        )


def _tls_text(agent: AgentProfile) -> str:
    if agent.ca_file and agent.ca_file.endswith("/tls/ca.crt"):
        return agent.ca_file.removesuffix("/tls/ca.crt")
    return "mutual TLS" if agent.cert_file else ("CA only" if agent.ca_file else "system CAs")
