"""The login screen: field errors, then a real login against the real control plane (wrong
password first), the fleet loading, a vault appearing live and the filter narrowing it."""

from __future__ import annotations

import asyncio
from typing import Any

from textual.widgets import Input, Label

from apps.core.viewmodels.login import WRONG_CREDENTIALS
from apps.tui.app import KeyVaultApp
from apps.tui.screens.home import HomeScreen
from apps.tui.screens.login import LoginScreen
from apps.tui.screens.vaults import FleetTable, VaultsScreen
from tests.apps.conftest import OWNER, PASSWORD, LiveControlPlane
from tests.apps.tui.conftest import SIZE, header_text, settle, texts


def fill(app: KeyVaultApp, **values: str) -> None:
    """Type values into the login form's fields (by id)."""
    for name, value in values.items():
        app.screen.query_one(f"#{name}", Input).value = value


def field_error(app: KeyVaultApp, name: str) -> str:
    """The message under one field."""
    return str(app.screen.query_one(f"#{name}-error", Label).render())


async def wait_for(pilot: Any, check: Any, timeout: float = 15.0) -> None:
    """Pause until ``check()`` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await pilot.pause(0.05)


async def test_field_errors_sit_next_to_their_field(stable_config: str) -> None:
    app = KeyVaultApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, LoginScreen)
        assert "not logged in" in header_text(app)
        fill(app, url="", email="", password="")
        await pilot.press("enter")
        await settle(pilot)
        assert "enter the control plane's URL" in field_error(app, "url")
        assert field_error(app, "email") == ""
        fill(app, url="ftp://cp", email="me@example.com", password="x")
        await pilot.press("enter")
        await settle(pilot)
        assert "must start with https://" in field_error(app, "url")
        assert texts(app, "#login-error") == ""  # said once, next to the field
        fill(app, url="https://cp.example.com", email="nobody", password="x")
        await pilot.press("enter")
        await settle(pilot)
        assert field_error(app, "url") == ""
        assert "is not an e-mail address" in field_error(app, "email")
        assert app.screen.query_one("#email", Input).has_class("invalid-field")
        assert app.focused is app.screen.query_one("#email", Input)
        assert not app.screen.query_one("#login-busy").display


async def test_password_field_is_masked(stable_config: str) -> None:
    app = KeyVaultApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.screen.query_one("#password", Input).password


async def test_wrong_then_right_password_then_live_fleet(
    live_cp: LiveControlPlane, keyring_env: dict[str, str]
) -> None:
    await asyncio.to_thread(live_cp.enroll_vault, "web-1")
    app = KeyVaultApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        fill(app, url=live_cp.url, email=OWNER, password="not the password")
        await pilot.press("enter")
        await wait_for(pilot, lambda: WRONG_CREDENTIALS in texts(app, "#login-error"))
        assert isinstance(app.screen, LoginScreen)
        assert not app.screen.query_one("#login-busy").display

        fill(app, password=PASSWORD)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen))  # what needs you
        await settle(pilot)
        await pilot.press("v")
        await wait_for(pilot, lambda: isinstance(app.screen, VaultsScreen))
        await settle(pilot)
        shell = app.shell
        assert shell is not None
        await wait_for(pilot, lambda: shell.online)
        table = app.screen.query_one(FleetTable)
        assert [str(table.get_row_at(i)[0]) for i in range(table.row_count)] == ["web-1"]
        assert "Acme" in header_text(app) and "● live" in header_text(app)
        assert "credentials in memory only" not in header_text(app)

        new_id = await asyncio.to_thread(live_cp.enroll_vault, "db-7")
        await wait_for(pilot, lambda: table.row_count == 2)  # no refresh pressed
        assert str(table.get_row(new_id)[0]) == "db-7"

        await pilot.press("slash", "d", "b")
        await wait_for(pilot, lambda: table.row_count == 1)  # one pause was not always enough
        assert str(table.get_row_at(0)[0]) == "db-7"
        await pilot.press("escape", "q")  # q in the filter box is a letter; from the table it quits
        await pilot.pause()
    assert shell.client._http.is_closed  # quitting closed the shell
