"""The users view against a real control plane: invite (shown once), role, reset, remove."""

from __future__ import annotations

import shlex

from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from apps.core.shell import Shell
from apps.desktop.models.users_model import EMAIL, ROLE
from apps.desktop.views.users import UsersView
from tests.apps.conftest import LiveControlPlane

WAIT = 15_000


def _yes(box: QMessageBox | None) -> None:
    assert box is not None
    box.buttons()[0].click()  # the action's own button (Cancel is the second)


def _select(view: UsersView, email: str) -> None:
    for row in range(view.proxy.rowCount()):
        if view.proxy.index(row, EMAIL).data() == email:
            view.table.selectRow(row)
            return
    raise AssertionError(f"{email} is not listed")


def test_invite_role_reset_remove(
    qtbot: QtBot, live_shell: Shell, live_cp: LiveControlPlane
) -> None:
    view = UsersView(live_shell)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitUntil(lambda: view.status.text().startswith("1 user"), timeout=WAIT)

    view.email.setText("new@example.com")
    view.invite_button.click()
    qtbot.waitUntil(lambda: view.issued.isVisible(), timeout=WAIT)
    args = shlex.split(view.issued.text())
    assert args[:3] == ["keyvault", "users", "accept"] and args[-1].startswith("kvi_")
    assert args[-1] not in view.status.text()
    # the same shown-once panel as a new enrollment token's
    from apps.desktop.views.enrollment import CreatedPanel
    from apps.desktop.views.ops_kit import ShownOncePanel

    assert isinstance(view.shown, ShownOncePanel) and issubclass(CreatedPanel, ShownOncePanel)
    assert "Invitation for new@example.com" in view.shown.title.text()
    live_cp.server.run(live_cp.cp.accounts.accept(args[-1], "a long enough password"))
    view.refresh()
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 2, timeout=WAIT)

    _select(view, "new@example.com")
    view.role.setCurrentText("operator")
    view.role_button.click()
    qtbot.waitUntil(
        lambda: any(
            view.proxy.index(r, ROLE).data() == "operator" for r in range(view.proxy.rowCount())
        ),
        timeout=WAIT,
    )
    _select(view, "new@example.com")
    _yes(view.reset())
    qtbot.waitUntil(lambda: "set-password" in view.issued.text(), timeout=WAIT)
    _select(view, "new@example.com")
    _yes(view.remove())
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 1, timeout=WAIT)
    assert view.proxy.index(0, EMAIL).data() == "owner@example.com (you)"
