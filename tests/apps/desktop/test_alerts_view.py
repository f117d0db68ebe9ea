"""The alerts view: rows, acknowledge/resolve, resolved toggle — over the fake and the real CP."""

from __future__ import annotations

from typing import Any

from apps.core.shell import Shell
from apps.desktop.main_window import MainWindow
from apps.desktop.models.alerts_model import MESSAGE, SEVERITY, STATE
from apps.desktop.views.alerts import AlertsView
from tests.apps.conftest import LiveControlPlane
from tests.apps.desktop.conftest import drive
from tests.apps.fake_cp import FakeControlPlane


def alerts_view(qtbot: Any, shell: Shell) -> AlertsView:
    drive(qtbot, shell.start())
    view = AlertsView(shell)
    qtbot.addWidget(view)
    view.show()
    return view


def cell(view: AlertsView, row: int, column: int) -> str:
    return str(view.model.data(view.model.index(row, column)))


def test_rows_buttons_and_resolved_toggle(qtbot: Any, fake_shell: Shell) -> None:
    view = alerts_view(qtbot, fake_shell)
    assert view.model.rowCount() == 3
    assert {cell(view, r, SEVERITY) for r in range(3)} == {"critical", "warning", "info"}
    assert not view.ack_button.isEnabled()  # nothing selected
    view.table.selectRow(0)
    assert view.ack_button.isEnabled() and view.resolve_button.isEnabled()
    view.resolve_button.click()
    qtbot.waitUntil(lambda: view.model.rowCount() == 2)  # resolved ones are hidden
    view.show_resolved.setChecked(True)
    assert view.model.rowCount() == 3
    assert "resolved" in {cell(view, r, STATE) for r in range(3)}


def test_acknowledge_a_real_alert(qtbot: Any, live_cp: LiveControlPlane, live_shell: Shell) -> None:
    vault_id = live_cp.enroll_vault("db-1")
    window = MainWindow(live_shell)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.ready and live_shell.online, timeout=10_000)
    with qtbot.waitSignal(window.critical_alert, timeout=10_000) as blocker:
        live_cp.raise_offline_alert(vault_id)
    assert blocker.args == ["db-1 is offline"]
    assert "1 open alert · 1 unread" in window.header.text()
    view = window.show_view("alerts")
    assert isinstance(view, AlertsView)
    assert "1 open alert · 0 unread" in window.header.text()
    qtbot.waitUntil(lambda: view.model.rowCount() == 1)
    assert cell(view, 0, MESSAGE) == "db-1 is offline" and cell(view, 0, 2) == "db-1"
    view.table.selectRow(0)
    view.ack_button.click()
    qtbot.waitUntil(lambda: cell(view, 0, STATE) == "acknowledged", timeout=10_000)
    page = live_cp.server.run(
        live_cp.cp.alerts.list(live_cp.org_id, state=None, after=None, limit=10)
    )
    assert page["items"][0]["state"] == "acknowledged"
    assert not view.ack_button.isEnabled()


def test_new_alert_is_read_when_the_view_is_open(
    qtbot: Any, fake_shell: Shell, fake_cp: FakeControlPlane
) -> None:
    view = alerts_view(qtbot, fake_shell)
    fake_shell.stream.emit(  # type: ignore[attr-defined]
        "alert.raised", fake_cp.add_alert("vault_offline", "gone", "critical")
    )
    assert fake_shell.alerts.state.unread == 0
    assert "gone" in {cell(view, r, MESSAGE) for r in range(view.model.rowCount())}


def test_offline_alert_time_is_readable_in_the_view_and_the_tray(
    qtbot: Any, live_cp: LiveControlPlane, live_shell: Shell
) -> None:
    """The monitor's own offline message (an ISO time, the vault's id) reads as words."""
    import re

    from tests.apps.tui.test_alerts_screen import raise_real_offline

    vault_id = live_cp.enroll_vault("db-1")
    window = MainWindow(live_shell)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.ready and live_shell.online, timeout=10_000)
    with qtbot.waitSignal(window.critical_alert, timeout=10_000) as blocker:
        assert raise_real_offline(live_cp, vault_id) == 1
    view = window.show_view("alerts")
    assert isinstance(view, AlertsView)
    qtbot.waitUntil(lambda: view.model.rowCount() == 1)
    for shown in (blocker.args[0], cell(view, 0, MESSAGE)):
        assert re.search(r"since before \d{4}-\d\d-\d\d \d\d:\d\d UTC$", shown), shown
        assert shown.startswith("vault db-1 has not sent") and vault_id not in shown
