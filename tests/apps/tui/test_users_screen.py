"""The users screen against a real control plane: invite (token shown once), role, reset,
remove — driven with the pilot."""

from __future__ import annotations

import shlex

from textual.widgets import DataTable, Input, Static

from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from apps.tui.screens.users import UsersScreen
from tests.apps.conftest import LiveControlPlane
from tests.apps.tui.conftest import SIZE
from tests.apps.tui.test_secrets_screen import wait_for


async def test_invite_role_reset_remove(live_shell: Shell, live_cp: LiveControlPlane) -> None:
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g")
        await wait_for(pilot, lambda: isinstance(app.screen, UsersScreen))
        screen = app.screen
        table = screen.query_one("#users", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1)

        screen.query_one("#email", Input).value = "new@example.com"
        await pilot.click("#invite")
        panel = screen.query_one("#issued", Static)
        await wait_for(pilot, lambda: not panel.has_class("hidden"))
        command = str(panel.content).split("\n")[1]
        args = shlex.split(command)
        assert args[:3] == ["keyvault", "users", "accept"] and args[-1].startswith("kvi_")
        # the invitation is real: accepting it makes a user, which the list shows after a reload
        live_cp.server.run(live_cp.cp.accounts.accept(args[-1], "a long enough password"))
        await pilot.press("f5")
        await wait_for(pilot, lambda: table.row_count == 2)

        # select the new user (sorted by e-mail: new@ before owner@), give them "operator"
        table.focus()
        table.move_cursor(row=0)
        assert "new@example.com" in str(table.get_row_at(0))
        screen.query_one("#role").value = "operator"
        table.focus()
        await pilot.press("E")
        await wait_for(pilot, lambda: "operator" in str(table.get_row_at(0)))

        # reset their password: confirm, the reset command is shown once
        await pilot.press("w")
        await pilot.press("y")
        await wait_for(pilot, lambda: "set-password" in str(panel.content))

        # remove them
        table.focus()
        table.move_cursor(row=0)
        await pilot.press("x")
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_count == 1)
        users = live_cp.server.run(live_cp.cp.accounts.list_users(_owner(live_cp)))
        assert [u["email"] for u in users] == ["owner@example.com"]


def _owner(live_cp: LiveControlPlane) -> object:
    from control_plane.services.principal import Principal

    return Principal("", live_cp.org_id, "owner@example.com", "owner", "")
