"""The enrollment screen against a real control plane: the token shown once really enrolls."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path
from typing import Any

from textual.widgets import DataTable, Input, Static

from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from apps.tui.screens.enrollment import EnrollmentScreen
from common.cpclient import ControlPlaneClient
from common.pki import make_csr
from tests.apps.conftest import ORG_KEY, LiveControlPlane
from tests.apps.real_agent import enroll_and_run
from tests.apps.tui.conftest import SIZE
from tests.apps.tui.test_secrets_screen import notifications, wait_for


async def test_create_show_once_and_enroll(live_shell: Shell, live_cp: LiveControlPlane) -> None:
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EnrollmentScreen))
        screen = app.screen
        table = screen.query_one("#tokens", DataTable)

        # a bad lifetime is named next to its field
        screen.query_one("#description", Input).value = "web host 3"
        screen.query_one("#ttl_hours", Input).value = "ever"
        await pilot.click("#create")
        await wait_for(pilot, lambda: screen.query(".field-error.shown, .form-error.shown"))
        assert table.row_count == 0

        screen.query_one("#ttl_hours", Input).value = "2"
        screen.query_one("#name", Input).value = "web-3"
        screen.query_one("#ttl_hours", Input).focus()
        await pilot.press("enter")
        panel = screen.query_one("#created")
        await wait_for(pilot, lambda: panel.has_class("shown"))
        command = str(screen.query_one("#created-command", Static).content)
        args = shlex.split(command)
        assert args[:4] == ["keyvault", "agent", "enroll", "--control-plane"]
        # the real gateway, the vault's name: one command that works as shown
        assert "<control-plane-host>" not in command and args[4].startswith("https://127.0.0.1:")
        assert args[5] == "--token" and args[6].startswith("kve_")
        assert args[7:9] == ["--name", "web-3"]
        token = args[6]
        follow = screen.query_one("#created-follow", Static)
        assert "waiting for the agent to enroll" in str(follow.content)
        await wait_for(pilot, lambda: table.row_count == 1)
        assert "web host 3" in str(table.get_row_at(0)) and token not in str(table.get_row_at(0))

        # c copies the command; the notification does not repeat the token
        screen.query_one("#tokens", DataTable).focus()
        await pilot.press("c")
        assert app.clipboard == command
        assert token not in notifications(app)

        # the token is real: the control plane registers a vault with it
        csr, _key = make_csr("agent")
        identity, _ = live_cp.server.run(
            live_cp.cp.vaults.register(token, csr.decode(), "web-3", "0.1.0")
        )
        assert identity["vault_id"].startswith("vlt_")
        # followed live: enrolled, then connected, with its name in the list
        await wait_for(pilot, lambda: "enrolled; waiting for the agent" in str(follow.content))
        await wait_for(pilot, lambda: "used" in str(table.get_row_at(0)))
        assert "web-3" in str(table.get_row_at(0))
        live_shell.route_event(
            "vault.status", {"vault_id": identity["vault_id"], "status": "online"}
        )
        await wait_for(pilot, lambda: "connected; waiting for its first" in str(follow.content))
        live_shell.route_event(
            "inventory.changed", {"vault_id": identity["vault_id"], "items": 0, "secrets": 0}
        )
        await wait_for(pilot, lambda: "ready: 0 secrets reported" in str(follow.content))

        # leaving the screen forgets it; coming back shows no token
        await pilot.press("v")
        await wait_for(pilot, lambda: not isinstance(app.screen, EnrollmentScreen))
        assert live_shell.enrollment.state.created is None
        await pilot.press("e")
        await wait_for(pilot, lambda: app.screen is screen)
        assert not panel.has_class("shown")
        assert token not in str(screen.query_one("#created-command", Static).content)


async def test_revoke_token(live_shell: Shell) -> None:
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, EnrollmentScreen))
        screen = app.screen
        await pilot.click("#create")
        table = screen.query_one("#tokens", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        table.focus()
        await pilot.press("x", "y")
        await wait_for(pilot, lambda: "revoked" in str(table.get_row_at(0)))
        doc = await live_shell.client.list_enrollment_tokens()
        assert [t["state"] for t in doc["items"]] == ["revoked"]


async def _create_token(app: KeyVaultApp, pilot: Any, name: str) -> tuple[Any, str]:
    """Open the screen, make a token for vault ``name``; (screen, the command shown)."""
    await pilot.press("e")
    await wait_for(pilot, lambda: isinstance(app.screen, EnrollmentScreen))
    screen = app.screen
    screen.query_one("#name", Input).value = name
    await pilot.click("#create")
    panel = screen.query_one("#created")
    await wait_for(pilot, lambda: panel.has_class("shown"))
    return screen, str(screen.query_one("#created-command", Static).content)


async def test_a_real_new_agent_is_followed_to_its_first_inventory(
    live_shell: Shell, live_cp: LiveControlPlane, tmp_path: Path
) -> None:
    """The command shown, run as written on a new host, enrolls a real agent process; the
    screen follows it over its mutual-TLS uplink: enrolled → connected → first inventory."""
    with ControlPlaneClient(live_cp.url, live_cp.token()) as cp:  # the org's key, registered
        cp.put_metadata_key(ORG_KEY.fingerprint)
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        screen, command = await _create_token(app, pilot, "web-4")
        follow = screen.query_one("#created-follow", Static)
        assert "--metadata-key-file" in command
        agent = await asyncio.to_thread(enroll_and_run, tmp_path, command, ORG_KEY)
        try:
            await wait_for(pilot, lambda: "ready:" in str(follow.content), timeout=30)
            assert "reported" in str(follow.content)
            vault = next(v for v in live_shell.vaults.state.rows if v.name == "web-4")
            assert vault.status == "online"
        finally:
            await asyncio.to_thread(agent.stop)


async def test_a_refused_agent_shows_why(
    live_shell: Shell, live_cp: LiveControlPlane, tmp_path: Path
) -> None:
    """A real agent with a metadata key the organisation has not registered is refused by
    the gateway: the screen says so and why (``vault.refused``), not "pending" forever."""
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        screen, command = await _create_token(app, pilot, "web-5")
        follow = screen.query_one("#created-follow", Static)
        agent = await asyncio.to_thread(enroll_and_run, tmp_path, command, ORG_KEY)
        try:
            await wait_for(pilot, lambda: "refused" in str(follow.content), timeout=30)
            assert "metadata key" in str(follow.content)
        finally:
            await asyncio.to_thread(agent.stop)
