"""The audit log screen against a real control plane: real actions, server and local filters."""

from __future__ import annotations

from textual.widgets import DataTable, Input, Static

from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from apps.tui.screens.audit import AuditScreen
from tests.apps.conftest import LiveControlPlane
from tests.apps.tui.conftest import SIZE
from tests.apps.tui.test_secrets_screen import cells, wait_for

POLICY = {
    "name": "audited",
    "selector": {"name_glob": "db/*"},
    "interval_seconds": 86400,
    "rotator": {"type": "random", "settings": {}},
}


async def test_audit_rows_and_filters(live_shell: Shell, live_cp: LiveControlPlane) -> None:
    policy = await live_shell.client.create_policy(POLICY)
    live_cp.enroll_vault("web-1")
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, AuditScreen))
        screen = app.screen
        table = screen.query_one("#audit", DataTable)
        await wait_for(pilot, lambda: table.row_count >= 3)
        rows = cells(table)
        actions = [r[3] for r in rows]
        assert "auth.login" in actions and "vaults.register" in actions
        assert [int(r[0]) for r in rows] == sorted((int(r[0]) for r in rows), reverse=True)
        policy_action = next(r[3] for r in rows if r[4] == policy["id"])

        # action: filtered by the server
        box = screen.query_one("#audit-action", Input)
        box.value = policy_action
        box.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: table.row_count == 1)
        assert cells(table)[0][4] == policy["id"]
        assert live_shell.audit.state.action == policy_action

        # clear it, then a local text filter over what is loaded
        box.value = ""
        await pilot.press("enter")
        await wait_for(pilot, lambda: table.row_count >= 3)
        screen.query_one("#audit-text", Input).value = "register"
        await wait_for(pilot, lambda: table.row_count == 1)
        assert cells(table)[0][3] == "vaults.register"
        status = str(screen.query_one("#audit-status", Static).content)
        assert "match 'register'" in status


async def test_audit_load_more(live_shell: Shell) -> None:
    live_shell.audit.page_size = 2
    for i in range(3):
        await live_shell.client.create_policy({**POLICY, "name": f"p{i}"})
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, AuditScreen))
        table = app.screen.query_one("#audit", DataTable)
        await wait_for(pilot, lambda: table.row_count == 2)
        table.focus()
        await pilot.press("m")
        await wait_for(pilot, lambda: table.row_count == 4)
        seqs = [int(r[0]) for r in cells(table)]
        assert seqs == sorted(seqs, reverse=True)
