"""The app: modes, header (user, live dot, unread count, offline banner), palette, help, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from textual.command import CommandPalette

from apps.core.session import Session
from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from apps.tui.screens.alerts import AlertsScreen
from apps.tui.screens.help import HelpScreen, keys_table
from apps.tui.screens.vaults import VaultsScreen
from common.errors import PermissionDeniedError
from tests.apps.conftest import OWNER, PASSWORD, LiveControlPlane, start_control_plane
from tests.apps.fake_cp import FakeControlPlane
from tests.apps.fake_shell import FakeStream
from tests.apps.tui.conftest import SIZE, header_text, settle, texts


async def test_header_shows_org_user_role_live_and_memory_store(
    fake_app: KeyVaultApp, fake_cp: FakeControlPlane
) -> None:
    open_alerts = sum(1 for a in fake_cp.alerts.values() if a["state"] == "open")
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(fake_app.screen, VaultsScreen)
        header = header_text(fake_app)
        for part in (
            "Acme",
            "owner@example.com",
            "(owner)",
            "● live",
            f"{open_alerts} open alerts · {open_alerts} unread",
            "credentials in memory only",
        ):
            assert part in header, header


async def test_modes_switch_with_keys(fake_app: KeyVaultApp) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("a")
        assert isinstance(fake_app.screen, AlertsScreen)
        await pilot.press("v")
        assert isinstance(fake_app.screen, VaultsScreen)
        assert fake_app.current_mode == "vaults"


async def test_offline_banner_follows_the_stream(fake_app: KeyVaultApp, fake_shell: Shell) -> None:
    stream = fake_shell.stream
    assert isinstance(stream, FakeStream)
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        banner = fake_app.screen.query_one("#offline-banner")
        assert not banner.display
        stream.set_online(False)
        await pilot.pause()
        assert banner.display
        assert "Live updates paused — reconnecting to http://cp.test…" in header_text(fake_app)
        assert "● offline" in header_text(fake_app)
        stream.set_online(True)
        await pilot.pause()
        assert not banner.display
        assert "● live" in header_text(fake_app)


async def test_palette_lists_the_screens_actions_navigation_and_logout(
    fake_app: KeyVaultApp,
) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        titles = {c.title for c in fake_app.get_system_commands(fake_app.screen)}
        for title in (
            "Filter",
            "Reload",
            "Revoke vault",
            "Sort column",
            "Go to Alerts",
            "Go to Policies",
            "Log out",
            "Toggle dark/light",
            "Quit",
        ):
            assert title in titles, titles
        await pilot.press("ctrl+p")
        assert isinstance(fake_app.screen, CommandPalette)


async def test_palette_runs_a_screen_action(fake_app: KeyVaultApp, fake_shell: Shell) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        command = next(
            c for c in fake_app.get_system_commands(fake_app.screen) if c.title == "Go to Alerts"
        )
        await command.callback()
        await pilot.pause()
        assert isinstance(fake_app.screen, AlertsScreen)


async def test_help_lists_keys_from_bindings_and_where_credentials_live(
    fake_app: KeyVaultApp,
) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(fake_app.screen, HelpScreen)
        console = Console(width=120, record=True)
        console.print(keys_table(fake_app.BINDINGS))  # what #help-keys shows
        text = console.export_text()
        for part in ("Revoke vault", "Acknowledge", "Rotate secret", "Audit log", "Quit"):
            assert part in text, text
        # the one key table: reload is F5 on every screen, resolve is f, no screen left out
        for part in ("F5", "Resolve (fixed)", "Reset password", "Needs you now"):
            assert part in text, text
        assert "memory only" in texts(fake_app, "#help-credentials")
        await pilot.press("escape")
        assert isinstance(fake_app.screen, VaultsScreen)


async def test_a_failing_action_is_a_notification_not_a_traceback(
    fake_app: KeyVaultApp, fake_cp: FakeControlPlane
) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        name = fake_app.shell.vaults.state.visible[0].name  # type: ignore[union-attr]
        fake_cp.fail_next(
            PermissionDeniedError("only owners and admins can revoke vaults"), "revoke_vault"
        )
        await pilot.press("x", *name, "enter")  # revoking: the name typed in full
        await settle(pilot)
        messages = [n.message for n in fake_app._notifications]
        assert "only owners and admins can revoke vaults" in messages
        fake_cp.fail_next(RuntimeError("a bug"), "revoke_vault")  # type: ignore[arg-type]
        await pilot.press("x", *name, "enter")
        await settle(pilot)
        messages = [n.message for n in fake_app._notifications]
        assert any("Unexpected error (RuntimeError)" in m for m in messages), messages
        assert fake_app.is_running
        assert isinstance(fake_app.screen, VaultsScreen)


async def test_quit_closes_the_shell(fake_app: KeyVaultApp, fake_cp: FakeControlPlane) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert fake_cp.closed


async def wait_for(pilot: Any, check: Any, timeout: float = 15.0) -> None:
    """Pause until ``check()`` is true (the servers run in another thread)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await pilot.pause(0.05)


async def cut_off(server: Any) -> None:
    """Stop listening and drop every open connection: the control plane is unreachable."""
    for site in list(server.runner.sites):
        await site.stop()
    for handler in list(server.runner.server.connections):
        handler.force_close()


async def listen_again(running: Any) -> None:
    """Serve on the same port again."""
    from aiohttp import web

    port = int(running.url.rsplit(":", 1)[1])
    await web.TCPSite(running.server.runner, "127.0.0.1", port).start()


async def test_offline_banner_when_the_control_plane_goes_away(
    tmp_path: Path, keyring_env: dict[str, str]
) -> None:
    running = await asyncio.to_thread(start_control_plane, tmp_path)
    try:
        session = await asyncio.to_thread(Session.login, running.url, OWNER, PASSWORD)
        shell = Shell.from_session(session)
        app = KeyVaultApp(shell)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: shell.online)
            assert not app.screen.query_one("#offline-banner").display
            await asyncio.to_thread(running.server.run, cut_off(running.server))
            await wait_for(pilot, lambda: app.screen.query_one("#offline-banner").display)
            banner = header_text(app)
            assert f"Live updates paused — reconnecting to {running.url}…" in banner
            assert "● offline" in banner
            await pilot.press("f5")  # a refresh now fails: said on screen, no traceback
            await settle(pilot)
            assert "Could not refresh" in texts(app, "#error")
            assert app.is_running
            await asyncio.to_thread(running.server.run, listen_again(running))
            await wait_for(pilot, lambda: not app.screen.query_one("#offline-banner").display, 40)
            assert "● live" in header_text(app)
            await wait_for(pilot, lambda: not texts(app, "#error"))  # reloaded on reconnect
        await shell.close()
    finally:
        await asyncio.to_thread(running.server.stop)


async def test_a_server_refusal_is_a_notification(
    live_cp: LiveControlPlane, live_shell: Shell
) -> None:
    vault_id = await asyncio.to_thread(live_cp.enroll_vault, "old-1")
    headers = {"Authorization": f"Bearer {live_cp.token()}"}
    resp = await asyncio.to_thread(
        httpx.post, f"{live_cp.url}/api/v1/vaults/{vault_id}/revoke", headers=headers
    )
    assert resp.status_code == 200, resp.text
    app = KeyVaultApp(live_shell, start="vaults")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")  # the only vault
        await settle(pilot)
        await pilot.press("Y")  # resync a revoked vault
        await settle(pilot)
        messages = [n.message for n in app._notifications]
        assert any("revoked" in m for m in messages), messages
        assert app.is_running


async def test_logout_by_key_after_every_screen_never_crashes(fake_cp: FakeControlPlane) -> None:
    """Issue 19: logging out after the Enrollment screen was open crashed with
    "'NoneType' object has no attribute 'enrollment'"; logout also has a key now (ctrl+l, also while typing)."""
    from apps.tui.screens.login import LoginScreen
    from tests.apps.fake_shell import build_fake_shell

    for letter in ("e", "v", "a", "p", "u", "l", "s"):
        app = KeyVaultApp(build_fake_shell(fake_cp))
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press(letter)
            await settle(pilot)
            await pilot.press("ctrl+l")
            await settle(pilot)
            assert isinstance(app.screen, LoginScreen), (letter, app.screen)
            assert app.shell is None and app.return_code is None


async def test_the_palette_lists_commands_not_table_cursor_keys(fake_app: KeyVaultApp) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        titles = [c.title for c in fake_app.get_system_commands(fake_app.screen)]
        for noise in ("Cursor up", "Page down", "Focus Next", "Copy selected text", "Bottom"):
            assert noise not in titles, titles
        assert titles.count("Log out") == 1 and "Revoke vault" in titles


async def test_the_alert_counts_fit_the_80_column_header(
    fake_app: KeyVaultApp, fake_cp: FakeControlPlane
) -> None:
    """At 80×24 the open and unread counts are shown whole, not cut with "…"."""
    from rich.cells import cell_len
    from textual.widgets import Static

    open_alerts = sum(1 for a in fake_cp.alerts.values() if a["state"] == "open")
    async with fake_app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        status = fake_app.screen.query_one("#header-status", Static)
        plain = str(getattr(status.render(), "plain", status.render()))
        assert f"{open_alerts} open · {open_alerts} unread" in plain
        assert cell_len(plain) <= status.content_region.width, (plain, status.region)
