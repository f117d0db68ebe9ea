"""The policies view against a real control plane: a bad value, fix and save, edit, delete."""

from __future__ import annotations

import httpx
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from apps.core.shell import Shell
from apps.desktop.models.policies_model import EVERY, NAME
from apps.desktop.views.policies import PoliciesView
from apps.desktop.views.policy_dialog import PolicyDialog
from tests.apps.conftest import LiveControlPlane
from tests.apps.desktop.ops_helpers import shoot

WAIT = 15_000


def server_policies(live_cp: LiveControlPlane) -> list[dict[str, object]]:
    """The policies as the real server has them."""
    return live_cp.policies()


def click_yes(qtbot: QtBot, box: QMessageBox | None, text: str) -> None:
    """Press the button labelled ``text`` in a confirmation."""
    assert box is not None and box.isVisible()
    button = next(b for b in box.buttons() if b.text() == text)
    button.click()


def test_create_edit_delete_policy(
    qtbot: QtBot, live_shell: Shell, live_cp: LiveControlPlane
) -> None:
    view = PoliciesView(live_shell)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitUntil(lambda: "0 policies" in view.status.text(), timeout=WAIT)

    # a bad interval: the message sits next to its field, the dialog stays, nothing is sent
    dialog = view.new()
    dialog.set_values(name="db passwords", name_glob="db/*", interval_days="soon")
    dialog.save()
    assert "number of days" in dialog.errors.text("interval_days")
    shoot(dialog, "policy-dialog", (560, 520))
    assert dialog.errors.text("name") == ""
    assert dialog.isVisible()
    qtbot.wait(100)
    assert server_policies(live_cp) == []

    # fixed: saved on the server, the dialog closes, the table shows it
    dialog.set_values(interval_days="30", settings="length=40")
    with qtbot.waitSignal(dialog.finished, timeout=WAIT):
        dialog.save()
    docs = server_policies(live_cp)
    assert [(d["name"], d["interval_seconds"]) for d in docs] == [("db passwords", 30 * 86400)]
    assert docs[0]["rotator"] == {"type": "random", "settings": {"length": 40}}
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 1, timeout=WAIT)
    assert view.proxy.index(0, NAME).data() == "db passwords"
    shoot(view, "policies")

    # edit: the dialog opens with the policy's values
    view.table.selectRow(0)
    edit = view.edit()
    assert isinstance(edit, PolicyDialog)
    assert edit.inputs["name"].text() == "db passwords"
    assert edit.inputs["interval_days"].text() == "30"
    assert edit.rotator.currentText() == "random"
    edit.set_values(interval_days="7")
    with qtbot.waitSignal(edit.finished, timeout=WAIT):
        edit.save()
    assert server_policies(live_cp)[0]["interval_seconds"] == 7 * 86400
    qtbot.waitUntil(lambda: view.proxy.index(0, EVERY).data() == "7 d", timeout=WAIT)

    # the server's refusal (a second policy of that name) is shown in the dialog, which stays
    twin = view.new()
    twin.set_values(name="db passwords", name_glob="api/*")
    twin.save()
    qtbot.waitUntil(lambda: "already exists" in twin.errors.form.text(), timeout=WAIT)
    assert twin.isVisible() and len(server_policies(live_cp)) == 1
    twin.reject()

    # the filter box narrows the table locally
    view.filter.setText("nothing like it")
    assert view.proxy.rowCount() == 0
    view.filter.setText("DB PASS")
    assert view.proxy.rowCount() == 1

    # delete, confirmed
    view.table.selectRow(0)
    click_yes(qtbot, view.delete(), "Delete")
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 0, timeout=WAIT)
    assert server_policies(live_cp) == []


def test_policy_events_arrive_live(
    qtbot: QtBot, live_shell: Shell, live_cp: LiveControlPlane
) -> None:
    """A policy made elsewhere appears without a reload (the live stream)."""
    from tests.apps.desktop.conftest import drive

    view = PoliciesView(live_shell)
    qtbot.addWidget(view)
    view.show()
    drive(qtbot, live_shell.start())
    qtbot.waitUntil(lambda: live_shell.online, timeout=WAIT)
    doc = {
        "name": "from the cli",
        "selector": {"name_glob": "api/*"},
        "interval_seconds": 86400,
        "rotator": {"type": "random", "settings": {}},
    }
    headers = {"Authorization": f"Bearer {live_cp.token()}"}
    resp = httpx.post(live_cp.url + "/api/v1/policies", json=doc, headers=headers)
    assert resp.status_code == 201, resp.text
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 1, timeout=WAIT)
    assert view.proxy.index(0, NAME).data() == "from the cli"


def test_every_error_at_once_next_to_its_field(
    qtbot: QtBot, live_shell: Shell, live_cp: LiveControlPlane
) -> None:
    """Issue 19: notice ≥ interval, an unknown setting, a vault that does not exist — shown
    together, each next to its field; nothing reaches the server."""
    view = PoliciesView(live_shell)
    qtbot.addWidget(view)
    dialog = view.new()
    dialog.set_values(name="", name_glob="db/*", interval_days="1", notice_days="2",
                      rotator="postgres", settings="conection=main, role=app")  # fmt: skip
    dialog.save()
    assert "1 to 200" in dialog.errors.text("name")
    assert "shorter than the interval" in dialog.errors.text("notice_days")
    assert "did you mean 'connection'" in dialog.errors.text("settings")
    dialog.set_values(name="ok", notice_days="0", settings="connection=main, role=app",
                      scope="vlt_nope")  # fmt: skip
    dialog.save()
    qtbot.waitUntil(lambda: "no vault vlt_nope" in dialog.errors.text("scope"), timeout=WAIT)
    assert dialog.errors.text("name") == "" and server_policies(live_cp) == []
    vault_id = live_cp.enroll_vault("db-1")
    dialog.set_values(scope="db-1")  # a vault by its name
    dialog.save()
    qtbot.waitUntil(lambda: len(server_policies(live_cp)) == 1, timeout=WAIT)
    assert server_policies(live_cp)[0]["scope"] == {"vault_ids": [vault_id]}


def test_a_policy_scope_shows_vault_names_not_ids(
    qtbot: QtBot, live_shell: Shell, live_cp: LiveControlPlane
) -> None:
    """Issue 19: the Vaults column names the vaults a policy is limited to."""
    from apps.desktop.models.policies_model import VAULTS
    from tests.apps.desktop.conftest import drive

    vault_id = live_cp.enroll_vault("db-1")
    view = PoliciesView(live_shell)
    qtbot.addWidget(view)
    view.show()
    drive(qtbot, live_shell.start())
    qtbot.waitUntil(lambda: live_shell.online, timeout=WAIT)
    doc = {
        "name": "db only",
        "selector": {"name_glob": "db/*"},
        "interval_seconds": 86400,
        "rotator": {"type": "random", "settings": {}},
        "scope": {"vault_ids": [vault_id]},
    }
    headers = {"Authorization": f"Bearer {live_cp.token()}"}
    resp = httpx.post(live_cp.url + "/api/v1/policies", json=doc, headers=headers)
    assert resp.status_code == 201, resp.text
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 1, timeout=WAIT)
    qtbot.waitUntil(lambda: view.proxy.index(0, VAULTS).data() == "db-1", timeout=WAIT)
