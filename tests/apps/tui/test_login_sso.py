"""The TUI login screen signs in with SSO (ctrl+o) against a real OpenID provider."""

from __future__ import annotations

import pytest

from apps.core.keyring_store import CredentialStore
from tests.apps.conftest import LiveControlPlane
from tests.apps.test_sso import browser, configure, provider, set_user

__all__ = ["provider"]  # the provider fixture, shared with tests/apps/test_sso.py


async def test_tui_login_screen_signs_in_with_sso(
    keyring_env: dict[str, str],
    sso_cp: LiveControlPlane,
    provider: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from textual.widgets import Input

    from apps.tui.app import KeyVaultApp
    from apps.tui.screens.home import HomeScreen
    from apps.tui.screens.sso_prompt import SsoPromptScreen
    from tests.apps.tui.conftest import SIZE, settle
    from tests.apps.tui.test_login_screen import fill, wait_for

    org = configure(sso_cp, provider)
    set_user(provider, "carol@example.com", ["kv-ops"])
    monkeypatch.setattr("webbrowser.open", browser("carol@example.com"))
    app = KeyVaultApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        fill(app, url=sso_cp.url)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, SsoPromptScreen))
        app.screen.query_one("#sso-org", Input).value = org
        await pilot.press("enter")
        # logged in: the app opens on what needs the operator now
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen), timeout=30)
        await settle(pilot)
        shell = app.shell
        assert shell is not None and shell.session.profile.email == "carol@example.com"
        await wait_for(pilot, lambda: shell.online)
    assert CredentialStore().get_session_token(sso_cp.url, "carol@example.com")
