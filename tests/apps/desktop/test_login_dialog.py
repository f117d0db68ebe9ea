"""The login dialog: field errors next to fields, then a real login (wrong, then right)."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QLineEdit

from apps.core.keyring_store import CredentialStore
from apps.desktop.login_dialog import LoginDialog
from tests.apps.conftest import OWNER, PASSWORD, LiveControlPlane


def fill(dialog: LoginDialog, **values: str) -> None:
    for name, value in values.items():
        dialog.inputs[name].setText(value)


def test_checks_each_field_before_any_network_call(
    qtbot: Any, qloop: Any, desktop_config: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(desktop_config))
    dialog = LoginDialog(CredentialStore.memory())
    qtbot.addWidget(dialog)
    assert dialog.inputs["password"].echoMode() == QLineEdit.EchoMode.Password
    fill(dialog, url="", email="", password="")
    dialog.submit()
    qtbot.waitUntil(lambda: dialog.field_error("url") is not None)
    assert "URL" in str(dialog.field_error("url"))
    fill(dialog, url="cp.example.com")
    dialog.submit()
    qtbot.waitUntil(lambda: "must start with https://" in str(dialog.field_error("url")))
    fill(dialog, url="https://cp.example.com", email="nobody")
    dialog.submit()
    qtbot.waitUntil(lambda: dialog.field_error("email") is not None)
    assert dialog.field_error("url") is None
    fill(dialog, email="a@example.com")
    dialog.submit()
    qtbot.waitUntil(lambda: dialog.field_error("password") == "enter your password")
    assert dialog.session is None and dialog.login_button.isEnabled()


def test_wrong_then_right_password_against_the_real_control_plane(
    qtbot: Any, qloop: Any, live_cp: LiveControlPlane, keyring_env: dict[str, str]
) -> None:
    dialog = LoginDialog()  # the real keyring (keyring_env)
    qtbot.addWidget(dialog)
    dialog.show()
    fill(dialog, url=live_cp.url, email=OWNER, password="not the password")
    dialog.submit()
    assert not dialog.login_button.isEnabled()  # busy while it runs
    qtbot.waitUntil(lambda: dialog.field_error("") is not None, timeout=10_000)
    assert dialog.field_error("") == "wrong e-mail address or password"
    assert dialog.inputs["password"].text() == "" and dialog.session is None
    fill(dialog, password=PASSWORD)
    with qtbot.waitSignal(dialog.accepted, timeout=10_000):
        dialog.submit()
    assert dialog.session is not None
    assert dialog.session.profile.email == OWNER
    stored = CredentialStore().get_session_token(live_cp.url, OWNER)  # in the real keyring
    assert stored == dialog.session.token
    again = LoginDialog()  # the profile pre-fills the next login
    qtbot.addWidget(again)
    assert again.inputs["url"].text() == live_cp.url and again.inputs["email"].text() == OWNER


def test_a_ca_path_is_shown_whole(qtbot: Any, desktop_config: Any, monkeypatch: Any) -> None:
    """The demo's CA path was cut at its start ("mp/kv-desk-…/ca.crt"): the field widens to
    show a path whole, keeps a very long one within bounds, and carries it as its tooltip."""
    from apps.desktop.login_dialog import PATH_FIELD_MAX

    monkeypatch.setenv("XDG_CONFIG_HOME", str(desktop_config))
    dialog = LoginDialog(CredentialStore.memory())
    qtbot.addWidget(dialog)
    path = "/tmp/kv-desk-okq4rwij/demo/control-plane/tls/ca.crt"
    fill(dialog, ca_file=path)
    dialog.show()
    qtbot.waitExposed(dialog)
    edit = dialog.inputs["ca_file"]
    assert edit.fontMetrics().horizontalAdvance(path) < edit.contentsRect().width()
    assert edit.toolTip() == path
    fill(dialog, ca_file="/x" * 400)
    assert edit.minimumWidth() == PATH_FIELD_MAX
    assert edit.toolTip() == "/x" * 400
