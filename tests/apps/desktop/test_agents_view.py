"""The agents view: connect (errors next to fields), saved list, remove — real keyring, files."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from apps.core.agents import AgentProfile
from apps.core.shell import Shell
from apps.desktop.views.agents import AgentsView, tls_text
from common.errors import ValidationError
from tests.apps.desktop.ops_helpers import shoot
from tests.conftest import AgentDir

WAIT = 15_000


def test_connect_errors_then_save_and_remove(
    qtbot: QtBot, live_shell: Shell, agent_dir: AgentDir, tmp_path: Path
) -> None:
    view = AgentsView(live_shell)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitUntil(lambda: view.status.text().startswith("0 saved agents"), timeout=WAIT)
    assert not view.open_button.isEnabled()

    # a folder that is not an agent's: the message sits next to the data folder field
    view.inputs["name"].setText("billing")
    view.inputs["url"].setText("https://127.0.0.1:9")
    view.inputs["data_dir"].setText(str(tmp_path))
    view.inputs["token"].setText(agent_dir.token)
    view.save_button.click()
    qtbot.waitUntil(lambda: view.errors.text("data_dir") != "", timeout=WAIT)
    assert "tls/ca.crt" in view.errors.text("data_dir")

    # a URL that is not https: next to the URL field
    view.inputs["data_dir"].setText(str(agent_dir.path))
    view.inputs["url"].setText("ftp://nowhere")
    view.save_button.click()
    qtbot.waitUntil(lambda: view.errors.text("url") != "", timeout=WAIT)
    assert view.errors.text("data_dir") == ""
    assert live_shell.agents.list() == []

    # fixed: saved (paths in agents.json, token in the real keyring), listed
    view.inputs["url"].setText("https://127.0.0.1:9")
    view.save_button.click()
    qtbot.waitUntil(lambda: view.list.rowCount() == 1, timeout=WAIT)
    saved = live_shell.agents.get("billing")
    assert live_shell.agents.token(saved) == agent_dir.token
    item = view.list.item(0, 2)
    assert item is not None and item.text() == str(agent_dir.path.resolve())
    assert agent_dir.token not in live_shell.agents.path.read_text()
    shoot(view, "agents")

    # removed after a confirmation: gone from the list, the file and the keyring
    view.list.selectRow(0)
    box = view.remove()
    assert box is not None
    next(b for b in box.buttons() if b.text() == "Remove").click()
    qtbot.waitUntil(lambda: view.list.rowCount() == 0, timeout=WAIT)
    assert live_shell.agents.list() == []
    assert live_shell.session.store.get_agent_token(saved.url) is None


def test_build_profile_from_three_files(tmp_path: Path) -> None:
    """Without a data folder the three TLS files are used, each checked to exist."""
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    values = {"name": "a", "url": "https://h:1", "data_dir": "", "cert_file": "", "key_file": ""}
    with pytest.raises(ValidationError) as caught:  # agents require mutual TLS by default
        AgentProfile.from_form({**values, "ca_file": str(ca)})
    assert caught.value.details == {"field": "cert_file"}
    assert "client cert and key" in caught.value.message
    (tmp_path / "c.crt").write_text("x")
    with pytest.raises(ValidationError) as caught:
        AgentProfile.from_form({**values, "ca_file": str(ca), "cert_file": str(tmp_path / "c.crt")})
    assert caught.value.details == {"field": "key_file"}
    assert tls_text(AgentProfile("a", "https://h:1", ca_file=str(ca))) == "CA only"  # saved before
    missing = {**values, "ca_file": str(tmp_path / "no-such.pem")}
    with pytest.raises(ValidationError) as caught:
        AgentProfile.from_form(missing)
    assert caught.value.details == {"field": "ca_file"}
