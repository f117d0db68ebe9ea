"""The enrollment view against a real control plane: the token shown once really enrolls."""

from __future__ import annotations

import shlex
from pathlib import Path

from PySide6.QtGui import QGuiApplication
from pytestqt.qtbot import QtBot

from apps.core.shell import Shell
from apps.desktop.models.tokens_model import DESCRIPTION, STATE
from apps.desktop.views.enrollment import EnrollmentView
from common.cpclient import ControlPlaneClient
from common.pki import make_csr
from tests.apps.conftest import ORG_KEY, LiveControlPlane
from tests.apps.desktop.conftest import drive
from tests.apps.desktop.ops_helpers import shoot
from tests.apps.real_agent import enroll_and_run

WAIT = 15_000


def test_create_show_once_and_enroll(
    qtbot: QtBot, live_shell: Shell, live_cp: LiveControlPlane
) -> None:
    view = EnrollmentView(live_shell)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitUntil(lambda: view.status.text().startswith("0 tokens"), timeout=WAIT)

    # a bad lifetime is named next to its field; nothing is made
    view.description.setText("web host 3")
    view.ttl_hours.setText("ever")
    view.create_button.click()
    qtbot.waitUntil(lambda: view.errors.text("ttl_hours") != "", timeout=WAIT)
    assert "number of hours" in view.errors.text("ttl_hours")
    assert view.created.isHidden() and view.proxy.rowCount() == 0

    view.ttl_hours.setText("2")
    view.name.setText("web-3")
    view.create_button.click()
    qtbot.waitUntil(lambda: view.created.isVisible(), timeout=WAIT)
    assert view.errors.text("ttl_hours") == ""
    command = view.created.command.text()
    args = shlex.split(command)
    assert args[:4] == ["keyvault", "agent", "enroll", "--control-plane"]
    # the real gateway and the vault's name: one command that works as shown
    assert "<control-plane-host>" not in command and args[4].startswith("https://127.0.0.1:")
    assert args[5] == "--token" and args[6].startswith("kve_")
    assert args[7:9] == ["--name", "web-3"]
    token = args[6]
    assert "waiting for the agent to enroll" in view.created.follow.text()
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 1, timeout=WAIT)
    assert view.proxy.index(0, DESCRIPTION).data() == "web host 3"
    assert view.proxy.index(0, STATE).data() == "active"
    shoot(view, "enrollment")

    # copy: the command (with its token) goes to the clipboard, the status line does not show it
    view.created.copy_button.click()
    assert QGuiApplication.clipboard().text() == command
    assert token not in view.status.text()

    # the token is real: the control plane registers a vault with it
    csr, _key = make_csr("agent")
    identity, _ = live_cp.server.run(
        live_cp.cp.vaults.register(token, csr.decode(), "web-3", "0.1.0")
    )
    assert identity["vault_id"].startswith("vlt_")
    vault_id = identity["vault_id"]
    # followed: enrolled → connected → ready (the events the stream delivers)
    live_shell.route_event("vault.registered", {"vault_id": vault_id, "name": "web-3"})
    qtbot.waitUntil(lambda: "enrolled; waiting" in view.created.follow.text(), timeout=WAIT)
    qtbot.waitUntil(lambda: view.proxy.index(0, STATE).data() == "used", timeout=WAIT)
    live_shell.route_event("vault.status", {"vault_id": vault_id, "status": "online"})
    qtbot.waitUntil(lambda: "connected; waiting" in view.created.follow.text(), timeout=WAIT)
    live_shell.route_event("inventory.changed", {"vault_id": vault_id, "items": 2, "secrets": 2})
    qtbot.waitUntil(lambda: "ready: 2 secrets" in view.created.follow.text(), timeout=WAIT)

    # leaving the view forgets it; coming back shows no token
    view.hide()
    assert live_shell.enrollment.state.created is None
    view.show()
    assert view.created.isHidden() and token not in view.created.command.text()
    QGuiApplication.clipboard().clear()


def test_revoke_token(qtbot: QtBot, live_shell: Shell) -> None:
    view = EnrollmentView(live_shell)
    qtbot.addWidget(view)
    view.show()
    view.create_button.click()
    qtbot.waitUntil(lambda: view.proxy.rowCount() == 1, timeout=WAIT)
    view.table.selectRow(0)
    assert view.revoke_button.isEnabled()
    box = view.revoke()
    assert box is not None
    next(b for b in box.buttons() if b.text() == "Revoke").click()
    qtbot.waitUntil(lambda: view.proxy.index(0, STATE).data() == "revoked", timeout=WAIT)
    doc = drive(qtbot, live_shell.client.list_enrollment_tokens())
    assert [t["state"] for t in doc["items"]] == ["revoked"]
    assert not view.revoke_button.isEnabled()


def _create_token(qtbot: QtBot, view: EnrollmentView, name: str) -> str:
    """Make a token for vault ``name`` in the view; the command shown."""
    view.name.setText(name)
    view.create_button.click()
    qtbot.waitUntil(lambda: view.created.isVisible(), timeout=WAIT)
    return view.created.command.text()


def test_a_real_new_agent_is_followed_to_its_first_inventory(
    qtbot: QtBot, live_shell: Shell, live_cp: LiveControlPlane, tmp_path: Path
) -> None:
    """The command shown, run as written on a new host, enrolls a real agent process; the
    view follows it over its mutual-TLS uplink: enrolled → connected → first inventory."""
    with ControlPlaneClient(live_cp.url, live_cp.token()) as cp:  # the org's key, registered
        cp.put_metadata_key(ORG_KEY.fingerprint)
    view = EnrollmentView(live_shell)
    qtbot.addWidget(view)
    view.show()
    drive(qtbot, live_shell.start())
    qtbot.waitUntil(lambda: live_shell.online, timeout=WAIT)
    command = _create_token(qtbot, view, "web-4")
    agent = enroll_and_run(tmp_path, command, ORG_KEY)
    try:
        qtbot.waitUntil(lambda: "ready:" in view.created.follow.text(), timeout=30_000)
        assert "reported" in view.created.follow.text()
    finally:
        agent.stop()


def test_a_refused_agent_shows_why(
    qtbot: QtBot, live_shell: Shell, live_cp: LiveControlPlane, tmp_path: Path
) -> None:
    """A real agent with a metadata key the organisation has not registered is refused by
    the gateway: the view says so and why (``vault.refused``), not "pending" forever."""
    view = EnrollmentView(live_shell)
    qtbot.addWidget(view)
    view.show()
    drive(qtbot, live_shell.start())
    qtbot.waitUntil(lambda: live_shell.online, timeout=WAIT)
    agent = enroll_and_run(tmp_path, _create_token(qtbot, view, "web-5"), ORG_KEY)
    try:
        qtbot.waitUntil(lambda: "refused" in view.created.follow.text(), timeout=30_000)
        assert "metadata key" in view.created.follow.text()
    finally:
        agent.stop()
