"""The main window over the fake control plane: navigation, header, banner, tray, settings."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QLabel

from apps.core.navigation import KEYS
from apps.core.shell import Shell
from apps.desktop.main_window import NAV, MainWindow, settings
from apps.desktop.tasks import run_task
from apps.desktop.views.alerts import AlertsView
from apps.desktop.views.home import HomeView
from apps.desktop.views.vaults import VaultsView
from common.errors import KeyVaultError
from tests.apps.fake_cp import EMAIL, FakeControlPlane


def open_window(qtbot: Any, shell: Shell) -> MainWindow:
    """A shown main window whose shell has started and loaded."""
    window = MainWindow(shell)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.ready and shell.online)
    assert window.views["vaults"].model.rowCount() == 12  # type: ignore[attr-defined]
    return window


def test_navigation_has_every_view(qtbot: Any, fake_shell: Shell) -> None:
    window = open_window(qtbot, fake_shell)
    titles = [window.nav.item(i).text() for i in range(window.nav.count())]
    assert titles[:2] == ["Home", "Vaults"] and titles[3:] == [t for _, t, _, _ in NAV[3:]]
    assert len(titles) == len(NAV) == 9
    assert isinstance(window.current_view(), HomeView)  # the window opens on what needs you
    assert isinstance(window.views["vaults"], VaultsView)
    assert isinstance(window.show_view("alerts"), AlertsView)
    assert window.current_view() is window.views["alerts"]
    for key, *_ in NAV:  # every view (or a clear placeholder) builds without error
        assert window.show_view(key) is window.current_view()
    placeholder = [v for v in window.views.values() if isinstance(v, QLabel)]
    assert all("not available" in v.text() for v in placeholder)


def test_header_banner_and_unread_count(
    qtbot: Any, fake_shell: Shell, fake_cp: FakeControlPlane
) -> None:
    window = open_window(qtbot, fake_shell)
    seeded = sum(1 for a in fake_cp.alerts.values() if a["state"] == "open")
    assert f"{seeded} open alerts · {seeded} unread" in window.header.text()
    window.show_view("alerts")  # the seeded open alerts are unread until looked at
    window.show_view("vaults")
    text = window.header.text()
    assert text.startswith(f"Acme  ·  {EMAIL} (owner)")
    # read, but still open: the header never says "0" next to the open alerts Home lists
    assert "● live" in text and f"{seeded} open alerts · 0 unread" in text
    assert window.banner.isHidden()
    fake_shell.stream.set_online(False)  # type: ignore[attr-defined]
    assert not window.banner.isHidden() and "○ offline" in window.header.text()
    fake_shell.stream.set_online(True)  # type: ignore[attr-defined]
    assert window.banner.isHidden()
    with qtbot.waitSignal(window.critical_alert) as blocker:
        fake_shell.stream.emit(  # type: ignore[attr-defined]
            "alert.raised", fake_cp.add_alert("vault_offline", "db-7 went away", "critical")
        )
    assert blocker.args == ["db-7 went away"]
    assert f"{seeded + 1} open alerts · 1 unread" in window.header.text()
    assert window.tray.toolTip() == f"KeyVault — {seeded + 1} open alerts · 1 unread"
    assert window.nav.item(KEYS.index("alerts")).text() == "Alerts (1)"
    # a warning does not notify
    fake_shell.stream.emit(  # type: ignore[attr-defined]
        "alert.raised", fake_cp.add_alert("rotation_failed", "meh", "warning")
    )
    assert f"{seeded + 2} open alerts · 2 unread" in window.header.text()
    window.show_view("alerts")  # seeing them reads them
    assert f"{seeded + 2} open alerts · 0 unread" in window.header.text()
    assert window.shell.alerts.state.open == len(window.shell.alerts.open_rows) == seeded + 2


def test_errors_go_to_the_message_bar(qtbot: Any, fake_shell: Shell) -> None:
    window = open_window(qtbot, fake_shell)

    async def fails() -> None:
        raise KeyVaultError("the control plane refused: try again")

    run_task(window.views["vaults"], fails())
    qtbot.waitUntil(lambda: window.message_bar.isVisible())
    assert window.message_bar.label.text() == "the control plane refused: try again"


def test_unexpected_errors_show_one_line(qtbot: Any, fake_shell: Shell) -> None:
    window = open_window(qtbot, fake_shell)

    async def bug() -> None:
        raise ZeroDivisionError("boom")

    run_task(window, bug())
    qtbot.waitUntil(lambda: window.message_bar.isVisible())
    assert (
        window.message_bar.label.text() == "something went wrong (ZeroDivisionError); see the log"
    )


def test_settings_remember_view_and_theme_never_a_token(
    qtbot: Any, fake_shell: Shell, desktop_config: Any
) -> None:
    window = open_window(qtbot, fake_shell)
    window.show_view("alerts")
    window.set_theme("dark")
    window.close()
    saved = settings()
    assert saved.value("last_view") == "alerts" and saved.value("theme") == "dark"
    assert saved.value("geometry") is not None
    stored = "".join(
        p.read_text(errors="replace") for p in desktop_config.rglob("*") if p.is_file()
    )
    assert "kvs_fake" not in stored
    assert set(saved.allKeys()) == {"geometry", "last_view", "theme"}
    again = MainWindow(fake_shell)
    qtbot.addWidget(again)
    assert isinstance(again.current_view(), AlertsView)
    window.set_theme("system")


def test_logout_revokes_and_finishes(
    qtbot: Any, fake_shell: Shell, fake_cp: FakeControlPlane
) -> None:
    window = open_window(qtbot, fake_shell)
    with qtbot.waitSignal(window.finished, timeout=5000) as blocker:
        window.logout()
    assert blocker.args == ["logout"]
    assert not window.isVisible()


def test_importing_the_metadata_key_shows_names_at_once(
    qtbot: Any, qloop: Any, tmp_path: Any
) -> None:
    """File → Import metadata key… under a memory keyring: the open vault shows its names."""
    from apps.desktop.views.vault_detail import VaultDetailView
    from tests.apps.core.test_shell_names import blind_shell

    fake = FakeControlPlane()
    fake.seed(vaults=12)
    web = next(iter(fake.vaults))
    for n in range(3):
        fake.add_secret(web, f"app/named-{n}")
    shell = blind_shell(fake)
    window = open_window(qtbot, shell)
    detail = window.open_vault(web)
    assert isinstance(detail, VaultDetailView)
    qtbot.waitUntil(lambda: detail.model.rowCount() >= 3)
    assert detail.sealed_note.isVisible()
    key_file = tmp_path / "keyvault-metadata.key"
    fake.key.save(key_file)
    window.import_metadata_key(str(key_file))
    names = lambda: {detail.model.index(r, 0).data() for r in range(detail.model.rowCount())}  # noqa: E731
    qtbot.waitUntil(lambda: {f"app/named-{n}" for n in range(3)} <= names())
    assert not detail.sealed_note.isVisible()


def test_reload_is_f5_and_ctrl_r_like_the_tui(
    qtbot: Any, fake_shell: Shell, fake_cp: FakeControlPlane
) -> None:
    """The desktop's Reload follows the shared key table: F5 and Ctrl+R reload the view."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QAction

    from apps.core.keys import desktop_shortcuts

    window = open_window(qtbot, fake_shell)
    window.show_view("vaults")
    [reload] = [a for a in window.findChildren(QAction) if a.text() == "Reload"]
    shown = [s.toString() for s in reload.shortcuts()]
    assert shown == desktop_shortcuts("reload") == ["F5", "Ctrl+R"]
    for key, modifier in (
        (Qt.Key.Key_F5, Qt.KeyboardModifier.NoModifier),
        (Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier),
    ):
        before = len(fake_cp.called("list_vaults"))
        qtbot.keyClick(window, key, modifier)
        qtbot.waitUntil(lambda b=before: len(fake_cp.called("list_vaults")) > b)


def test_no_table_header_is_clipped_and_cells_end_in_an_ellipsis(
    qtbot: Any, fake_shell: Shell
) -> None:
    """Every column of every view is at least as wide as its bold title ("Versio" was the
    secrets panel's "Version"), and what still does not fit is cut with "…"."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QFontMetrics
    from PySide6.QtWidgets import QHeaderView, QTableView

    from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel
    from apps.desktop.views.secrets import SecretsView
    from tests.apps.tui.test_snapshots_ops import AGENT, FakeAgentClient

    window = open_window(qtbot, fake_shell)
    for key, *_ in NAV:
        window.show_view(key)
    tables = window.findChildren(QTableView)
    model = AgentSecretsViewModel(AGENT, "kvt_fake", client=FakeAgentClient())
    secrets = SecretsView(fake_shell, AGENT, model=model)
    qtbot.addWidget(secrets)
    tables += secrets.findChildren(QTableView)  # the versions panel too
    assert len(tables) >= 8
    for table in tables:
        header, model = table.horizontalHeader(), table.model()
        font = header.font()
        font.setBold(True)
        metrics = QFontMetrics(font)
        assert header.textElideMode() == Qt.TextElideMode.ElideRight
        assert table.textElideMode() in (Qt.TextElideMode.ElideRight, Qt.TextElideMode.ElideLeft)
        for column in range(model.columnCount()):
            if header.sectionResizeMode(column) == QHeaderView.ResizeMode.Stretch:
                continue
            title = str(model.headerData(column, Qt.Orientation.Horizontal) or "")
            assert table.columnWidth(column) >= metrics.horizontalAdvance(title) + 16, title
