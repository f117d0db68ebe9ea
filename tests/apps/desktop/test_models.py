"""Table models without a window: rows, roles, one-row dataChanged, view-model filtering."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from PySide6.QtCore import QSortFilterProxyModel, Qt
from PySide6.QtWidgets import QApplication

from apps.core.viewmodels.alerts import AlertRow
from apps.core.viewmodels.vault_detail import InventoryRow
from apps.core.viewmodels.vaults import VaultRow, VaultsViewModel
from apps.desktop.models import ROW_ROLE, SORT_ROLE
from apps.desktop.models.alerts_model import RAISED, SEVERITY, VAULT, AlertsTableModel
from apps.desktop.models.inventory_model import LABELS, ROTATION, InventoryTableModel
from apps.desktop.models.vaults_model import (
    CERT_EXPIRY,
    LAST_SEEN,
    NAME,
    SECRETS,
    STATUS,
    VaultsTableModel,
)
from tests.apps.fake_cp import NOW

DISPLAY = Qt.ItemDataRole.DisplayRole


def vault(i: int, status: str = "online", **changes: Any) -> VaultRow:
    """A vault row with predictable values."""
    row = VaultRow(
        id=f"vlt_{i:06d}",
        name=f"{('web', 'db', 'cache')[i % 3]}-{i:05d}",
        status=status,
        last_seen=NOW - timedelta(minutes=3),
        secret_count=i % 7,
        version=f"0.{1 + i % 3}.0",
        cert_expiry=NOW + (timedelta(hours=2) if i == 1 else timedelta(days=90)),
        revoked=False,
    )
    return replace(row, **changes)


def vaults_model(n: int) -> VaultsTableModel:
    model = VaultsTableModel(clock=lambda: NOW)
    model.set_rows([vault(i) for i in range(n)])
    return model


def test_vault_cells_and_roles(qapp: QApplication) -> None:
    model = vaults_model(3)
    assert model.rowCount() == 3 and model.columnCount() == 7
    assert model.headerData(NAME, Qt.Orientation.Horizontal) == "Name"
    first = model.index(0, NAME)
    assert model.data(first) == "web-00000"
    assert model.data(model.index(0, LAST_SEEN)) == "live"  # online: no stale heartbeat age
    offline = VaultsTableModel(clock=lambda: NOW)
    offline.set_rows([vault(0, "offline")])
    assert offline.data(offline.index(0, LAST_SEEN)) == "3m ago"
    assert model.data(model.index(0, CERT_EXPIRY)) == "in 90d"
    assert model.data(model.index(1, CERT_EXPIRY)) == "in 2h"
    assert model.data(model.index(0, SECRETS)) == "0"
    assert model.data(first, ROW_ROLE).id == "vlt_000000"
    assert model.data(model.index(2, SECRETS), SORT_ROLE) == 2  # numbers sort as numbers
    assert model.data(model.index(0, STATUS), Qt.ItemDataRole.ForegroundRole) is not None
    # a certificate within hours of its end is flagged (they live a day), a distant one is not
    assert model.data(model.index(1, CERT_EXPIRY), Qt.ItemDataRole.ForegroundRole) is not None
    assert model.data(model.index(0, CERT_EXPIRY), Qt.ItemDataRole.ForegroundRole) is None


def test_revoked_vault_shows_revoked(qapp: QApplication) -> None:
    model = VaultsTableModel(clock=lambda: NOW)
    model.set_rows([vault(0, "offline", revoked=True, secret_count=None)])
    assert model.data(model.index(0, STATUS)) == "revoked"
    assert model.data(model.index(0, SECRETS)) == "—"


def test_update_row_emits_data_changed_for_that_row_only(qapp: QApplication) -> None:
    model = vaults_model(50)
    seen: list[tuple[int, int, int, int]] = []
    resets: list[int] = []
    model.dataChanged.connect(
        lambda a, b, *_: seen.append((a.row(), a.column(), b.row(), b.column()))
    )
    model.modelReset.connect(lambda: resets.append(1))
    assert model.update_row("vlt_000017", vault(17, "offline"))
    assert seen == [(17, 0, 17, 6)] and resets == []
    assert model.data(model.index(17, STATUS)) == "offline"
    assert not model.update_row("vlt_999999", vault(999999))
    assert len(seen) == 1


def filtered(n: int) -> tuple[VaultsViewModel, VaultsTableModel]:
    """A fleet view model of ``n`` rows and a table model following its visible rows."""
    model = VaultsTableModel(clock=lambda: NOW)
    vm = VaultsViewModel(None, lambda state: model.apply_rows(state.visible))  # type: ignore[arg-type]
    vm.set_rows([vault(i) for i in range(n)])
    return vm, model


def test_view_model_filters_case_insensitively_and_follows_updates(qapp: QApplication) -> None:
    # the filter lives in the view model (as the TUI's does); the table shows what it keeps
    vm, model = filtered(30)
    vm.set_filter("  DB-  ")
    names = [model.data(model.index(r, NAME)) for r in range(model.rowCount())]
    assert len(names) == 10 and all(n.startswith("db-") for n in names)
    vm.set_filter("offline")
    assert model.rowCount() == 0
    vm.apply_event("vault.status", {"vault_id": "vlt_000004", "status": "offline"})
    assert model.rowCount() == 1  # a live status change enters the filter
    assert model.data(model.index(0, NAME), ROW_ROLE).id == "vlt_000004"
    vm.set_filter("")
    assert model.rowCount() == 30


def test_proxy_sorts_by_the_sort_role(qapp: QApplication) -> None:
    model = vaults_model(10)
    proxy = QSortFilterProxyModel()
    proxy.setSourceModel(model)
    proxy.setSortRole(SORT_ROLE)
    proxy.sort(SECRETS, Qt.SortOrder.DescendingOrder)
    counts = [proxy.data(proxy.index(r, SECRETS), SORT_ROLE) for r in range(10)]
    assert counts == sorted(counts, reverse=True)


def test_filter_on_10000_rows_narrows_and_widens(qapp: QApplication) -> None:
    # how fast is measured by `python -m bench.desktop`, not here
    vm, model = filtered(10_000)
    for text, rows in (("w", 3334), ("web", 3334), ("0.2", 3333), ("", 10_000)):
        vm.set_filter(text)
        assert model.rowCount() == rows, text
    vm.set_filter("web-0000")
    assert model.rowCount() == 4  # web-00000, -00003, -00006, -00009


def alert(i: int, severity: str = "critical", state: str = "open") -> AlertRow:
    return AlertRow(
        f"alr_{i}",
        "vault_offline",
        severity,
        state,
        f"msg {i}",
        "vlt_000001",
        NOW - timedelta(hours=i),
        None,
    )


def test_alerts_model(qapp: QApplication) -> None:
    model = AlertsTableModel(lambda vid: "web-1" if vid == "vlt_000001" else None)
    model.set_rows([alert(1), alert(2, "info", "resolved")])
    assert model.data(model.index(0, SEVERITY)) == "critical"
    assert model.data(model.index(0, VAULT)) == "web-1"
    assert model.data(model.index(0, SEVERITY), Qt.ItemDataRole.FontRole).bold()
    assert model.data(model.index(1, SEVERITY), Qt.ItemDataRole.FontRole) is None
    assert model.data(model.index(0, SEVERITY), SORT_ROLE) == 0
    assert model.data(model.index(0, RAISED), SORT_ROLE) > model.data(
        model.index(1, RAISED), SORT_ROLE
    )
    seen: list[int] = []
    model.dataChanged.connect(lambda a, b, *_: seen.append(a.row()))
    model.update_row("alr_2", alert(2, "info", "acknowledged"))
    assert seen == [1] and model.data(model.index(1, 1)) == "acknowledged"


def test_inventory_model(qapp: QApplication) -> None:
    row = InventoryRow(
        "sec_1",
        "db/password",
        False,
        (("env", "prod"), ("team", "a")),
        3,
        NOW,
        None,
        None,
        None,
        NOW - timedelta(days=1),
        False,
    )
    sealed = replace(row, secret_id="sec_2", name="(sealed)", sealed=True, labels=())
    model = InventoryTableModel(clock=lambda: NOW)
    model.set_rows([row, sealed])
    assert model.data(model.index(0, LABELS)) == "env=prod, team=a"
    assert model.data(model.index(0, ROTATION)) == "no policy"
    assert model.data(model.index(1, LABELS)) == "—"
    assert "metadata key" in model.data(model.index(1, 0), Qt.ItemDataRole.ToolTipRole)
    assert model.data(model.index(1, 0), Qt.ItemDataRole.ForegroundRole) is not None
