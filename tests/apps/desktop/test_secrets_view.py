"""Secrets on a real agent process, over mutual TLS, driven through the desktop views."""

from __future__ import annotations

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QLineEdit
from pytestqt.qtbot import QtBot

from apps.core.shell import Shell
from apps.desktop.clipboard import ClipboardGuard
from apps.desktop.models.secrets_model import MASK, NAME, STATE, VALUE, VERSION
from apps.desktop.views.agents import AgentsView
from apps.desktop.views.secret_dialog import SecretDialog
from apps.desktop.views.secrets import SecretsView
from tests.apps.desktop.ops_helpers import shoot
from tests.conftest import AgentProcess

WAIT = 15_000


def cell(view: SecretsView, column: int, row: int = 0) -> str:
    """The text shown in one cell."""
    return str(view.proxy.index(row, column).data())


def connect(qtbot: QtBot, agents: AgentsView, agent: AgentProcess) -> SecretsView:
    """Save the agent through the connect form (data folder + token) and open it."""
    values = {"name": "local", "url": agent.url, "data_dir": str(agent.dir.path)}
    for field, value in {**values, "token": agent.dir.token}.items():
        agents.inputs[field].setText(value)
    assert agents.inputs["token"].echoMode() == QLineEdit.EchoMode.Password
    agents.save_button.click()
    qtbot.waitUntil(lambda: agents.list.rowCount() == 1, timeout=WAIT)
    assert agents.inputs["token"].text() == ""
    agents.list.selectRow(0)
    secrets = agents.open_selected()
    assert secrets is not None and agents.stack.currentWidget() is secrets
    return secrets


def save(qtbot: QtBot, dialog: SecretDialog | None, **values: str) -> None:
    """Fill a secret dialog and wait until it saved and closed."""
    assert dialog is not None
    dialog.set_values(**values)
    with qtbot.waitSignal(dialog.finished, timeout=WAIT):
        dialog.save()


def confirm(view: SecretsView, box: object, text: str) -> None:
    """Press ``text`` in the confirmation just opened."""
    assert box is view.question and view.question is not None
    next(b for b in view.question.buttons() if b.text() == text).click()


def test_secrets_through_the_desktop(
    qtbot: QtBot, live_shell: Shell, agent_process: AgentProcess
) -> None:
    agent = agent_process.client()
    agents = AgentsView(live_shell)
    qtbot.addWidget(agents)
    agents.show()
    view = connect(qtbot, agents, agent_process)
    saved = live_shell.agents.get("local")
    assert saved.cert_file and saved.cert_file.endswith("tls/client.crt")
    assert live_shell.agents.token(saved) == agent_process.dir.token  # in the real keyring
    qtbot.waitUntil(lambda: view.status.text().startswith("0 secrets"), timeout=WAIT)

    # create: a bad name is refused next to the field, then a good one is saved
    dialog = view.new()
    assert dialog is not None
    assert dialog.inputs["value"].echoMode() == QLineEdit.EchoMode.Password
    dialog.set_values(name="bad name!", value="s3cret-v1")
    dialog.save()
    qtbot.waitUntil(lambda: dialog.errors.text("name") != "", timeout=WAIT)
    assert "name may hold" in dialog.errors.text("name") and dialog.isVisible()
    save(qtbot, dialog, name="db/password", labels="env=prod")
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 1, timeout=WAIT)
    assert agent.get("db/password")["value"] == "s3cret-v1"
    assert (cell(view, NAME), cell(view, VALUE), cell(view, VERSION)) == ("db/password", MASK, "1")

    # reveal shows the value, a second press masks it again
    assert view.select("db/password")
    view.buttons["reveal"].click()
    qtbot.waitUntil(lambda: cell(view, VALUE) == "s3cret-v1", timeout=WAIT)
    assert view.buttons["reveal"].text() == "Hide"
    shoot(agents, "secrets")
    view.buttons["reveal"].click()
    assert cell(view, VALUE) == MASK

    # copy: on the clipboard (never on screen), wiped after the (injected) timeout
    view.guard = ClipboardGuard(clear_after_ms=200)
    board = QGuiApplication.clipboard()
    view.buttons["copy"].click()
    qtbot.waitUntil(lambda: board.text() == "s3cret-v1", timeout=WAIT)
    assert cell(view, VALUE) == MASK and "s3cret-v1" not in view.status.text()
    qtbot.waitUntil(lambda: board.text() == "", timeout=3000)

    # edit writes version 2; the versions panel lists both
    edit = view.edit()
    assert edit is not None and not edit.inputs["name"].isEnabled()
    assert edit.inputs["labels"].text() == "env=prod"
    save(qtbot, edit, value="s3cret-v2")
    qtbot.waitUntil(lambda: cell(view, VERSION) == "2", timeout=WAIT)
    assert agent.get("db/password")["value"] == "s3cret-v2"
    qtbot.waitUntil(lambda: view.versions.rowCount() == 2, timeout=WAIT)
    assert [str(view.versions.model().index(r, 0).data()) for r in range(2)] == ["v2", "v1"]

    # rotate (confirmed): a new version with a new value, listed in the versions panel
    confirm(view, view.rotate(), "Rotate")
    qtbot.waitUntil(lambda: cell(view, VERSION) == "3", timeout=WAIT)
    rotated = agent.get("db/password")
    assert rotated["version"] == 3 and rotated["value"] != "s3cret-v2"
    qtbot.waitUntil(lambda: view.versions.rowCount() == 3, timeout=WAIT)

    # delete (confirmed), show deleted, undelete
    confirm(view, view.delete(), "Delete")
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 0, timeout=WAIT)
    assert agent.list(deleted=True)["secrets"][0]["name"] == "db/password"
    view.show_deleted.setChecked(True)
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 1, timeout=WAIT)
    assert cell(view, STATE) == "deleted"
    assert view.select("db/password", deleted=True)
    assert view.buttons["undelete"].isEnabled() and not view.buttons["rotate"].isEnabled()
    view.buttons["undelete"].click()
    qtbot.waitUntil(lambda: cell(view, STATE) == "active", timeout=WAIT)
    assert agent.get("db/password")["version"] == 3

    # back to the agents: revealed values forgotten, the list is shown again
    view.select("db/password")
    view.buttons["reveal"].click()
    qtbot.waitUntil(lambda: cell(view, VALUE) != MASK, timeout=WAIT)
    model = view.vm
    view.leave()
    assert model is not None and model.state.revealed == {}
    assert agents.stack.currentIndex() == 0 and agents.secrets is None


def test_filter_and_missing_token(
    qtbot: QtBot, live_shell: Shell, agent_process: AgentProcess
) -> None:
    """The name filter is local; an agent whose token is gone says so instead of failing."""
    agent = agent_process.client()
    for name in ("db/password", "api/key", "db/user"):
        agent.create(name, "v")
    agents = AgentsView(live_shell)
    qtbot.addWidget(agents)
    agents.show()
    view = connect(qtbot, agents, agent_process)
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 3, timeout=WAIT)
    view.filter.setText("DB/")
    assert sorted(cell(view, NAME, r) for r in range(view.proxy.rowCount())) == [
        "db/password",
        "db/user",
    ]
    view.leave()

    saved = live_shell.agents.get("local")
    live_shell.session.store.delete_agent_token(saved.url)
    broken = agents.open_agent(saved)
    qtbot.waitUntil(lambda: "no token for agent local" in broken.status.text(), timeout=WAIT)
    assert not broken.buttons["new"].isEnabled()
