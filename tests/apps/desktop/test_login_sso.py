"""The desktop login dialog signs in with SSO against a real OpenID provider."""

from __future__ import annotations

from typing import Any

import pytest

from tests.apps.conftest import LiveControlPlane
from tests.apps.test_sso import browser, configure, provider, set_user

__all__ = ["provider"]  # the provider fixture, shared with tests/apps/test_sso.py


def test_desktop_login_dialog_signs_in_with_sso(
    qtbot: Any,
    qloop: Any,
    keyring_env: dict[str, str],
    sso_cp: LiveControlPlane,
    provider: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apps.desktop.login_dialog import LoginDialog

    org = configure(sso_cp, provider)
    set_user(provider, "dave@example.com", ["kv-admins"])
    monkeypatch.setattr("webbrowser.open", browser("dave@example.com"))
    dialog = LoginDialog()
    qtbot.addWidget(dialog)
    dialog.inputs["url"].setText(sso_cp.url)
    assert dialog.sso_button.isVisible() or dialog.sso_button.text() == "Sign in with SSO…"
    dialog.submit_sso(org)
    qtbot.waitUntil(lambda: dialog.session is not None, timeout=30_000)
    assert dialog.session is not None and dialog.session.profile.role == "admin"
