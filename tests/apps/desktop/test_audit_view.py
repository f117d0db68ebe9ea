"""The audit view against a real control plane: real actions, server and local filters, more."""

from __future__ import annotations

from pytestqt.qtbot import QtBot

from apps.core.shell import Shell
from apps.desktop.models.audit_model import ACTION, SEQ, TARGET
from apps.desktop.views.audit import CONTROL_PLANE, AuditView
from tests.apps.conftest import LiveControlPlane
from tests.apps.desktop.conftest import drive
from tests.apps.desktop.ops_helpers import shoot

WAIT = 15_000
POLICY = {
    "name": "audited",
    "selector": {"name_glob": "db/*"},
    "interval_seconds": 86400,
    "rotator": {"type": "random", "settings": {}},
}


def column(view: AuditView, col: int) -> list[str]:
    """A column's texts in the order shown."""
    return [str(view.proxy.index(r, col).data()) for r in range(view.proxy.rowCount())]


def test_audit_rows_and_filters(qtbot: QtBot, live_shell: Shell, live_cp: LiveControlPlane) -> None:
    policy = drive(qtbot, live_shell.client.create_policy(POLICY))
    vault = live_cp.enroll_vault("web-1")
    drive(qtbot, live_shell.vaults.refresh())
    view = AuditView(live_shell)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitUntil(lambda: view.proxy.rowCount() >= 3, timeout=WAIT)
    actions = column(view, ACTION)
    assert "auth.login" in actions and "vaults.register" in actions
    seqs = [int(s) for s in column(view, SEQ)]
    assert seqs == sorted(seqs, reverse=True)  # newest first
    policy_action = next(
        a for a, t in zip(actions, column(view, TARGET), strict=True) if t == policy["id"]
    )
    shoot(view, "audit")

    # action: filtered by the server
    view.set_action(policy_action)
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 1, timeout=WAIT)
    assert column(view, TARGET) == [policy["id"]]
    assert live_shell.audit.state.action == policy_action

    # cleared, then a local text filter over what is loaded (the proxy; no reload)
    view.action.clear()
    qtbot.waitUntil(lambda: view.proxy.rowCount() >= 3, timeout=WAIT)
    loaded = len(live_shell.audit.state.rows)
    view.text.setText("REGISTER")
    assert column(view, ACTION) == ["vaults.register"]
    assert f"1 of {loaded} loaded entries match 'REGISTER'" in view.status.text()
    view.text.clear()

    # source: the control plane's own entries, or one vault's (none reported yet)
    assert view.source.findData(vault) > 0
    view.set_source(CONTROL_PLANE)
    qtbot.waitUntil(lambda: live_shell.audit.state.source == CONTROL_PLANE, timeout=WAIT)
    qtbot.waitUntil(lambda: not live_shell.audit.state.loading, timeout=WAIT)
    assert view.proxy.rowCount() >= 3
    view.set_source(vault)
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 0, timeout=WAIT)


def test_audit_load_more(qtbot: QtBot, live_shell: Shell) -> None:
    live_shell.audit.page_size = 2
    for i in range(3):
        drive(qtbot, live_shell.client.create_policy({**POLICY, "name": f"p{i}"}))
    view = AuditView(live_shell)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 2, timeout=WAIT)
    assert view.more_button.isEnabled()
    view.more_button.click()
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 4, timeout=WAIT)
    seqs = [int(s) for s in column(view, SEQ)]
    assert seqs == sorted(seqs, reverse=True)
