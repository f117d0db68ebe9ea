"""The agents screen (the `s` mode): the connect form's checks, saving to the real keyring, removal."""

from __future__ import annotations

from textual.widgets import DataTable, Input, Static

from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from apps.tui.screens.agents import AgentsScreen
from tests.apps.tui.conftest import SIZE
from tests.apps.tui.test_secrets_screen import connect, wait_for
from tests.conftest import AgentProcess


async def test_agent_form_errors_and_remove(live_shell: Shell, agent_process: AgentProcess) -> None:
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, AgentsScreen))
        screen = app.screen
        screen.query_one("#name", Input).value = "x"
        screen.query_one("#url", Input).value = "ftp://nope"
        await pilot.click("#save")
        error = screen.query_one("#url-error", Static)
        await wait_for(pilot, lambda: error.has_class("shown"))
        assert "https://" in str(error.content)
        assert live_shell.agents.list() == []

        await connect(app, pilot, agent_process)
        table = screen.query_one("#agents", DataTable)
        table.focus()
        await pilot.press("x", "y")
        await wait_for(pilot, lambda: table.row_count == 0)
        assert live_shell.agents.list() == []


async def test_missing_data_folder_is_named(live_shell: Shell, tmp_path: object) -> None:
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, AgentsScreen))
        screen = app.screen
        values = {"name": "a", "url": "https://127.0.0.1:1", "data_dir": f"{tmp_path}/none"}
        for field, value in {**values, "token": "kvt_x"}.items():
            screen.query_one(f"#{field}", Input).value = value
        await pilot.click("#save")
        error = screen.query_one("#data_dir-error", Static)
        await wait_for(pilot, lambda: error.has_class("shown"))
        assert "tls/ca.crt" in str(error.content)
        assert screen.query_one("#agents", DataTable).row_count == 0


async def test_a_ca_only_connection_asks_for_the_client_certificate(
    live_shell: Shell, agent_process: AgentProcess
) -> None:
    """Agents require mutual TLS: a CA file alone is refused next to the client cert field."""
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, AgentsScreen))
        screen = app.screen
        ca = agent_process.dir.path / "tls" / "ca.crt"
        values = {"name": "a", "url": agent_process.url, "ca_file": str(ca), "token": "kvt_x"}
        for field, value in values.items():
            screen.query_one(f"#{field}", Input).value = value
        await pilot.click("#save")
        error = screen.query_one("#cert_file-error", Static)
        await wait_for(pilot, lambda: error.has_class("shown"))
        assert "client cert and key" in str(error.content)
        assert live_shell.agents.list() == []
