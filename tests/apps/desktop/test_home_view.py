"""The desktop's home view: what needs the operator now, live, a double-click from the fix."""

from __future__ import annotations

from typing import Any

from apps.core.shell import Shell
from apps.desktop.views.home import HomeView
from apps.desktop.views.vault_detail import VaultDetailView
from tests.apps.desktop.test_main_window import open_window
from tests.apps.fake_cp import FakeControlPlane


def _texts(view: HomeView) -> list[list[str]]:
    table = view.table
    return [
        [table.item(r, c).text() for c in range(table.columnCount())]
        for r in range(table.rowCount())
    ]


def test_home_lists_what_needs_you_and_opens_the_fix(
    qtbot: Any, fake_shell: Shell, fake_cp: FakeControlPlane
) -> None:
    window = open_window(qtbot, fake_shell)
    view = window.current_view()
    assert isinstance(view, HomeView)
    state = fake_shell.home.state
    assert view.table.rowCount() == state.total == sum(state.counts.values()) > 0
    assert view.summary.text() == state.summary()
    assert [row[0] for row in _texts(view)] == [i.severity for i in state.items]

    flagged = {i.vault_id for i in state.items}
    online = next(
        r for r in fake_shell.vaults.state.rows if r.status == "online" and r.id not in flagged
    )
    fake_shell.stream.emit(  # type: ignore[attr-defined]
        "vault.status", {"vault_id": online.id, "status": "offline"}
    )
    qtbot.waitUntil(lambda: any(r[2] == f"{online.name} is offline" for r in _texts(view)))
    assert view.table.rowCount() == fake_shell.home.state.total == state.total + 1

    at = next(i for i, item in enumerate(fake_shell.home.state.items) if item.vault_id == online.id)
    view.open_row(at)
    assert isinstance(window.current_view(), VaultDetailView)
    window.show_view("home")
    at = next(i for i, item in enumerate(fake_shell.home.state.items) if item.goto == "alerts")
    view.open_row(at)
    assert window.current_view() is window.views["alerts"]


def test_one_alert_is_not_one_alerts(
    qtbot: Any, fake_shell: Shell, fake_cp: FakeControlPlane
) -> None:
    from apps.desktop.views.alerts import AlertsView

    for alert_id in list(fake_cp.alerts)[1:]:
        fake_cp.alerts.pop(alert_id)
    window = open_window(qtbot, fake_shell)
    view = window.show_view("alerts")
    assert isinstance(view, AlertsView)
    qtbot.waitUntil(lambda: view.summary.text().startswith("1 alert "))
    assert "1 alerts" not in view.summary.text()
