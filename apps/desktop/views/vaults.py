"""The fleet: every vault, live, with a filter-as-you-type box; smooth with 10,000 rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtWidgets import QLabel, QLineEdit, QPushButton, QWidget

from apps.core.navigation import area
from apps.core.rules import status_counts
from apps.core.viewmodels.vaults import VaultRow, VaultsState
from apps.desktop.models import ROW_ROLE
from apps.desktop.models.vaults_model import SORT_KEYS, VaultsTableModel
from apps.desktop.tasks import run_task
from apps.desktop.views import (
    attach,
    error_label,
    fast_table,
    follow,
    show_error,
    title_row,
    view_layout,
)
from apps.desktop.views.typed_confirm import TypedConfirmDialog

if TYPE_CHECKING:
    from apps.core.shell import Shell

#: more changed rows than this repaint with one model reset
MANY = 200
WIDTHS = (240, 90, 100, 80, 90, 110, 200)


class VaultsView(QWidget):
    """All vaults: filter, sort by header, open one (double-click / Enter), revoke one."""

    open_vault = Signal(str)

    def __init__(self, shell: Shell, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shell = shell
        self.vm = shell.vaults
        self.model = VaultsTableModel(parent=self)
        self.proxy = QSortFilterProxyModel(self)  # the view model filters and sorts
        self.proxy.setSourceModel(self.model)
        self._build()
        follow(self, self.vm.subscribe, self.show_state)
        self.show_state(self.vm.state)

    def _build(self) -> None:
        layout = view_layout(self)
        self.refresh_button = QPushButton("Refresh")
        self.revoke_button = QPushButton("Revoke…")
        self.open_button = QPushButton("Open")
        header, _ = title_row(
            area("vaults").heading, self.open_button, self.revoke_button, self.refresh_button
        )
        layout.addLayout(header)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter by name, id, status or version")
        self.filter.setClearButtonEnabled(True)
        layout.addWidget(self.filter)
        self.summary = QLabel()
        self.summary.setObjectName("summary")
        layout.addWidget(self.summary)
        self.error = error_label()
        layout.addWidget(self.error)
        self.table = fast_table(WIDTHS)
        attach(self.table, self.proxy)
        self.table.horizontalHeader().setSortIndicatorShown(True)
        self.table.horizontalHeader().setSectionsClickable(True)
        layout.addWidget(self.table, 1)
        self.filter.textChanged.connect(self.set_filter)
        self.table.horizontalHeader().sectionClicked.connect(self._sort_by)
        self.table.doubleClicked.connect(self._open_index)
        self.table.activated.connect(self._open_index)
        self.open_button.clicked.connect(self._open_selected)
        self.refresh_button.clicked.connect(self.refresh)
        self.revoke_button.clicked.connect(self._revoke_selected)

    # ------------------------------------------------------------ state → widgets
    def show_state(self, state: VaultsState) -> None:
        """Repaint: single rows when only contents changed, else reset the model."""
        self.model.apply_rows(state.visible, many=MANY)  # a reload: one reset, not 10,000 signals
        column = SORT_KEYS.index(state.sort) if state.sort in SORT_KEYS else 0
        order = Qt.SortOrder.DescendingOrder if state.descending else Qt.SortOrder.AscendingOrder
        self.table.horizontalHeader().setSortIndicator(column, order)
        show_error(self.error, state.error and f"Could not load the vaults: {state.error}")
        self._summarize(state)

    def _summarize(self, state: VaultsState) -> None:
        parts = [f"{n} {s}" for s, n in status_counts(state.rows)]
        text = f"{state.total} vaults" + (f" · {' · '.join(parts)}" if parts else "")
        if state.filter.strip():
            text += f" · showing {len(state.visible)} matching “{state.filter.strip()}”"
        if state.loading:
            text += " · loading…"
        self.summary.setText(text)

    # ------------------------------------------------------------ commands
    def set_filter(self, text: str) -> None:
        """Filter the table: the view model keeps the matching rows (as the TUI's does)."""
        self.vm.set_filter(text)

    def _sort_by(self, column: int) -> None:
        self.vm.set_sort(SORT_KEYS[column])

    def refresh(self) -> None:
        """Reload every vault."""
        run_task(self, self.vm.refresh())

    def selected(self) -> VaultRow | None:
        """The selected vault, or None."""
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        row: Any = rows[0].data(ROW_ROLE)
        return row if isinstance(row, VaultRow) else None

    def _open_index(self, index: QModelIndex) -> None:
        row = index.data(ROW_ROLE)
        if isinstance(row, VaultRow):
            self.open_vault.emit(row.id)

    def _open_selected(self) -> None:
        row = self.selected()
        if row is not None:
            self.open_vault.emit(row.id)

    def _revoke_selected(self) -> TypedConfirmDialog | None:
        """Ask for the vault's name (irreversible), then revoke; returns the open dialog."""
        row = self.selected()
        if row is None or row.revoked:
            return None
        dialog = TypedConfirmDialog(
            self,
            f"Revoke {row.name} ({row.id})? Its agent is disconnected and cannot reconnect.",
            row.name or row.id,
            "Revoke vault",
        )
        dialog.accepted.connect(lambda: run_task(self, self.vm.revoke(row.id)))
        dialog.open()
        return dialog
