"""The fleet view: filter, sort, open a vault, live status — over the fake and the real CP."""

from __future__ import annotations

from typing import Any

from apps.core.shell import Shell
from apps.desktop.main_window import MainWindow
from apps.desktop.models import ROW_ROLE
from apps.desktop.models.vaults_model import NAME, SECRETS, STATUS
from apps.desktop.views.vault_detail import VaultDetailView
from apps.desktop.views.vaults import VaultsView
from control_plane.services.presence import VaultRef
from tests.apps.conftest import LiveControlPlane
from tests.apps.desktop.conftest import drive
from tests.apps.fake_cp import FakeControlPlane


def vaults_view(qtbot: Any, shell: Shell) -> VaultsView:
    """A started shell's fleet view."""
    drive(qtbot, shell.start())
    view = VaultsView(shell)
    qtbot.addWidget(view)
    view.show()
    return view


def cell(view: VaultsView, row: int, column: int) -> str:
    return str(view.proxy.data(view.proxy.index(row, column)))


def status_of(view: VaultsView, vault_id: str) -> str | None:
    at = view.model.row_of(vault_id)
    return None if at is None else str(view.model.data(view.model.index(at, STATUS)))


def test_filter_sort_and_summary(qtbot: Any, fake_shell: Shell) -> None:
    view = vaults_view(qtbot, fake_shell)
    assert view.proxy.rowCount() == 12
    assert view.summary.text().startswith("12 vaults · ")
    qtbot.keyClicks(view.filter, "OFFLINE")
    shown = [cell(view, r, STATUS) for r in range(view.proxy.rowCount())]
    assert shown and set(shown) == {"offline"}
    assert f"showing {len(shown)} matching “OFFLINE”" in view.summary.text()
    view.filter.clear()
    assert view.proxy.rowCount() == 12
    view.table.horizontalHeader().sectionClicked.emit(SECRETS)  # sort by secrets, ascending
    counts = [
        view.proxy.data(view.proxy.index(r, SECRETS), ROW_ROLE).secret_count for r in range(12)
    ]
    assert counts == sorted(counts)
    view.table.horizontalHeader().sectionClicked.emit(SECRETS)  # again: descending
    first = view.proxy.data(view.proxy.index(0, SECRETS), ROW_ROLE).secret_count
    assert first == max(counts) and fake_shell.vaults.state.descending


def test_live_status_repaints_one_row(qtbot: Any, fake_shell: Shell) -> None:
    view = vaults_view(qtbot, fake_shell)
    resets: list[int] = []
    changed: list[int] = []
    view.model.modelReset.connect(lambda: resets.append(1))
    view.model.dataChanged.connect(lambda a, b, *_: changed.append(a.row()))
    fake_shell.stream.emit(  # type: ignore[attr-defined]
        "vault.status", {"vault_id": "vlt_000001", "status": "offline"}
    )
    assert status_of(view, "vlt_000001") == "offline"
    assert resets == [] and changed == [view.model.row_of("vlt_000001")]
    # a new vault changes the set of rows
    fake_shell.stream.emit(  # type: ignore[attr-defined]
        "vault.registered", {"vault_id": "vlt_new", "name": "brand-new"}
    )
    assert status_of(view, "vlt_new") == "pending" and resets == [1]


def test_open_a_vault_from_the_window(qtbot: Any, fake_shell: Shell) -> None:
    window = MainWindow(fake_shell)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: window.ready)
    view = window.views["vaults"]
    assert isinstance(view, VaultsView)
    source = view.model.index(view.model.row_of("vlt_000001") or 0, 0)
    view.table.selectRow(view.proxy.mapFromSource(source).row())  # the vault with 6 secrets
    view.open_button.click()
    detail = window.current_view()
    assert isinstance(detail, VaultDetailView)
    qtbot.waitUntil(lambda: detail.model.rowCount() == 6)
    assert detail.title.text() == view.model.data(source.siblingAtColumn(NAME))
    assert "No commands yet" in detail.commands.item(0).text()  # not an empty box
    detail.table.selectRow(0)
    detail.rotate_button.click()
    qtbot.waitUntil(
        lambda: detail.commands.count() == 1 and "rotate" in detail.commands.item(0).text()
    )
    line = detail.commands.item(0).text()
    assert "rotate app/secret-" in line and "sec_" not in line, line  # the name, not the id
    detail.back_button.click()
    assert window.current_view() is view


def test_vaults_go_online_and_offline_live(
    qtbot: Any, live_cp: LiveControlPlane, live_shell: Shell
) -> None:
    vault_id = live_cp.enroll_vault("web-1")
    view = vaults_view(qtbot, live_shell)
    qtbot.waitUntil(lambda: live_shell.online, timeout=10_000)
    assert status_of(view, vault_id) == "pending"
    ref = VaultRef(vault_id, live_cp.org_id, "web-1")
    gen = live_cp.server.run(live_cp.cp.presence.connect(ref, "0.1.0")).gen  # the agent connects
    qtbot.waitUntil(lambda: status_of(view, vault_id) == "online", timeout=10_000)
    live_cp.server.run(live_cp.cp.presence.disconnect(vault_id, gen))
    live_cp.server.run(live_cp.cp.vaults.raise_offline(live_cp.org_id, vault_id, "web-1 gone"))
    qtbot.waitUntil(lambda: status_of(view, vault_id) == "offline", timeout=10_000)
    assert live_shell.alerts.state.unread == 1  # and the offline alert arrived with it


def test_revoking_needs_the_vault_name_typed(
    qtbot: Any, fake_shell: Shell, fake_cp: FakeControlPlane
) -> None:
    """Irreversible: a click is not enough; the action stays off until the name is typed."""

    view = VaultsView(fake_shell)
    qtbot.addWidget(view)
    view.show()
    drive(qtbot, fake_shell.vaults.refresh())
    qtbot.waitUntil(lambda: view.table.model().rowCount() > 0)
    view.table.selectRow(0)
    row = view.selected()
    assert row is not None and not row.revoked
    dialog = view._revoke_selected()
    assert dialog is not None and not dialog.confirm_button.isEnabled()
    dialog.field.setText("y")
    assert not dialog.confirm_button.isEnabled()
    dialog.reject()
    assert fake_cp.called("revoke_vault") == []
    dialog = view._revoke_selected()
    assert dialog is not None
    dialog.field.setText(row.name)
    assert dialog.confirm_button.isEnabled()
    dialog.confirm_button.click()
    qtbot.waitUntil(lambda: fake_cp.called("revoke_vault") == [((row.id,), {})])
