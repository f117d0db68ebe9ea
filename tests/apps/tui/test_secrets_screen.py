"""Secrets on a real agent process, over mutual TLS, driven through the TUI."""

from __future__ import annotations

from collections.abc import Callable

from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from apps.tui.screens.agents import AgentsScreen
from apps.tui.screens.secret_form import SecretFormScreen
from apps.tui.screens.secrets import MASK, SecretsScreen
from tests.apps.tui.conftest import SIZE
from tests.conftest import AgentProcess


async def wait_for(pilot: Pilot[None], cond: Callable[[], object], timeout: float = 15) -> None:
    """Let the app run until ``cond()`` holds (workers talk to real servers)."""
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out waiting for the screen")


def cells(table: DataTable[object]) -> list[list[str]]:
    """Every row of a table as plain text."""
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def notifications(app: KeyVaultApp) -> str:
    """Every notification shown so far, as one text."""
    return " ".join(str(n.message) for n in app._notifications)


async def connect(app: KeyVaultApp, pilot: Pilot[None], agent: AgentProcess) -> AgentsScreen:
    """Save the agent through the connect form (data folder + token)."""
    await pilot.press("s")
    await wait_for(pilot, lambda: isinstance(app.screen, AgentsScreen))
    screen = app.screen
    assert isinstance(screen, AgentsScreen)
    values = {"name": "local", "url": agent.url, "data_dir": str(agent.dir.path)}
    for field, value in {**values, "token": agent.dir.token}.items():
        screen.query_one(f"#{field}", Input).value = value
    await pilot.click("#save")
    await wait_for(pilot, lambda: screen.query_one("#agents", DataTable).row_count == 1)
    return screen


async def save_form(app: KeyVaultApp, pilot: Pilot[None], **values: str) -> SecretFormScreen:
    """Fill the open secret form and save it."""
    form = app.screen
    assert isinstance(form, SecretFormScreen)
    for field, value in values.items():
        form.query_one(f"#{field}", Input).value = value
    await pilot.press("ctrl+s")
    return form


async def test_secrets_through_the_tui(live_shell: Shell, agent_process: AgentProcess) -> None:
    agent = agent_process.client()
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        agents = await connect(app, pilot, agent_process)
        saved = live_shell.agents.get("local")
        assert saved.cert_file and saved.cert_file.endswith("tls/client.crt")
        assert live_shell.agents.token(saved) == agent_process.dir.token  # in the real keyring
        agents.query_one("#agents", DataTable).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, SecretsScreen))
        screen = app.screen
        assert isinstance(screen, SecretsScreen)
        table = screen.query_one("#secrets", DataTable)
        status = screen.query_one("#secrets-status", Static)
        await wait_for(pilot, lambda: "0 secrets" in str(status.content))

        # create: a bad name is refused next to the field, then a good one is saved
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, SecretFormScreen))
        form = await save_form(app, pilot, name="bad name!", value="s3cret-v1")
        error = form.query_one("#name-error", Static)
        await wait_for(pilot, lambda: error.has_class("shown"))
        assert "name may hold" in str(error.content)
        assert form.query_one("#value", Input).password  # typed value stays masked
        await save_form(app, pilot, name="db/password", labels="env=prod")
        await wait_for(pilot, lambda: app.screen is screen and table.row_count == 1)
        assert agent.get("db/password")["value"] == "s3cret-v1"
        row = cells(table)[0]
        assert row[0] == "db/password" and row[2] == MASK and row[3] == "1"
        assert "s3cret-v1" not in str(cells(table))

        # ctrl+t reveals the value, ctrl+t again masks it
        table.focus()
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: cells(table)[0][2] == "s3cret-v1")
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: cells(table)[0][2] == MASK)

        # copy: to the clipboard, never on screen or in a notification
        await pilot.press("c")
        await wait_for(pilot, lambda: app.clipboard == "s3cret-v1")
        await wait_for(pilot, lambda: "copied" in notifications(app))
        assert "s3cret-v1" not in notifications(app)
        assert cells(table)[0][2] == MASK

        # edit writes version 2; the versions panel lists both
        await pilot.press("E")
        await wait_for(pilot, lambda: isinstance(app.screen, SecretFormScreen))
        assert app.screen.query_one("#name", Input).disabled
        assert app.screen.query_one("#labels", Input).value == "env=prod"
        await save_form(app, pilot, value="s3cret-v2")
        await wait_for(pilot, lambda: app.screen is screen and cells(table)[0][3] == "2")
        assert agent.get("db/password")["value"] == "s3cret-v2"
        await pilot.press("V")
        versions = screen.query_one("#versions", DataTable)
        await wait_for(pilot, lambda: versions.row_count == 2)
        assert [r[0] for r in cells(versions)] == ["v2", "v1"]

        # rotate (confirmed): a new version with a new value
        await pilot.press("r", "y")
        await wait_for(pilot, lambda: cells(table)[0][3] == "3")
        rotated = agent.get("db/password")
        assert rotated["version"] == 3 and rotated["value"] != "s3cret-v2"

        # delete (confirmed), show deleted, undelete
        await pilot.press("d", "y")
        await wait_for(pilot, lambda: table.row_count == 0)
        assert agent.list(deleted=True)["secrets"][0]["name"] == "db/password"
        await pilot.press("D")
        await wait_for(pilot, lambda: table.row_count == 1 and cells(table)[0][1] == "deleted")
        await pilot.press("U")
        await wait_for(pilot, lambda: cells(table)[0][1] == "active")
        assert agent.get("db/password")["version"] == 3

        # back to the agents: values forgotten
        screen.model and await screen.model.reveal("db/password")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is agents)
        assert screen.model is not None and screen.model.state.revealed == {}
