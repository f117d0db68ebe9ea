"""Alerts: newest first, acknowledge or resolve, resolved ones on demand; seen means read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import QCheckBox, QLabel, QPushButton, QWidget

from apps.core.navigation import area
from apps.core.viewmodels.alerts import AlertRow, AlertsState
from apps.core.viewmodels.home import plural
from apps.desktop.models import ROW_ROLE
from apps.desktop.models.alerts_model import AlertsTableModel
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

if TYPE_CHECKING:
    from apps.core.shell import Shell

WIDTHS = (80, 110, 160, 400, 140)


class AlertsView(QWidget):
    """The alerts table with acknowledge / resolve buttons."""

    def __init__(self, shell: Shell, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shell = shell
        self.vm = shell.alerts
        self.model = AlertsTableModel(self._vault_name, parent=self, humanize=shell.names.humanize)
        self._build()
        follow(self, self.vm.subscribe, self.show_state)
        self.show_state(self.vm.state)

    def _vault_name(self, vault_id: str) -> str | None:
        row = self.shell.vaults.row(vault_id)
        return row.name if row is not None and row.name else None

    def _build(self) -> None:
        layout = view_layout(self)
        self.ack_button = QPushButton("Acknowledge")
        self.resolve_button = QPushButton("Resolve")
        self.show_resolved = QCheckBox("Show resolved")
        header, _ = title_row(
            area("alerts").heading, self.show_resolved, self.ack_button, self.resolve_button
        )
        layout.addLayout(header)
        self.summary = QLabel()
        self.summary.setObjectName("summary")
        layout.addWidget(self.summary)
        self.error = error_label()
        layout.addWidget(self.error)
        self.table = fast_table(WIDTHS, stretch=3)
        attach(self.table, self.model)
        layout.addWidget(self.table, 1)
        self.ack_button.clicked.connect(self.acknowledge_selected)
        self.resolve_button.clicked.connect(self.resolve_selected)
        self.show_resolved.toggled.connect(self.vm.set_show_resolved)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._enable())
        self._enable()

    def show_state(self, state: AlertsState) -> None:
        """Repaint the rows (keeping the selection) and mark them read while visible."""
        selected = self.selected()
        if [r.id for r in self.model.rows()] == [r.id for r in state.rows]:
            for row in state.rows:
                self.model.update_row(row.id, row)
        else:
            self.model.set_rows(state.rows)
            if selected is not None and (at := self.model.row_of(selected.id)) is not None:
                self.table.selectRow(at)
        open_count = sum(1 for r in state.rows if r.state == "open")
        self.summary.setText(f"{plural(len(state.rows), 'alert')} · {open_count} open")
        show_error(self.error, state.error and f"Could not load the alerts: {state.error}")
        if state.unread and self.isVisible():
            self.vm.mark_read()
        self._enable()

    def showEvent(self, event: QShowEvent) -> None:
        """Seeing the alerts reads them."""
        super().showEvent(event)
        self.vm.mark_read()

    def selected(self) -> AlertRow | None:
        """The selected alert, or None."""
        rows = self.table.selectionModel().selectedRows()
        row = rows[0].data(ROW_ROLE) if rows else None
        return row if isinstance(row, AlertRow) else None

    def _enable(self) -> None:
        row = self.selected()
        self.ack_button.setEnabled(row is not None and row.state == "open")
        self.resolve_button.setEnabled(row is not None and row.state != "resolved")

    def acknowledge_selected(self) -> None:
        """open → acknowledged."""
        row = self.selected()
        if row is not None:
            run_task(self, self.vm.acknowledge(row.id))

    def resolve_selected(self) -> None:
        """→ resolved."""
        row = self.selected()
        if row is not None:
            run_task(self, self.vm.resolve(row.id))
