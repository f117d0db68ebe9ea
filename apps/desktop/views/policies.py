"""Rotation policies: a filterable table, live from the stream; create, edit and delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QLabel, QLineEdit, QMessageBox, QPushButton, QWidget

from apps.core.navigation import area
from apps.desktop.models.policies_model import PoliciesTableModel
from apps.desktop.tasks import run_task
from apps.desktop.views import follow, title_row, view_layout
from apps.desktop.views.ops_kit import ask, proxy_for, select_key, selected, show_status, table_for
from apps.desktop.views.policy_dialog import PolicyDialog

if TYPE_CHECKING:
    from PySide6.QtGui import QShowEvent

    from apps.core.shell import Shell
    from apps.core.viewmodels.policies import PolicyRow

WIDTHS = (200, 200, 70, 70, 90, 150, 130)


class PoliciesView(QWidget):
    """The organisation's rotation policies."""

    def __init__(self, shell: Shell, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shell = shell
        self.vm = shell.policies
        self.model = PoliciesTableModel(parent=self, humanize=shell.names.humanize)
        self.proxy = proxy_for(self.model, parent=self)
        self.table = table_for(self.proxy, WIDTHS, stretch=1)
        self.dialog: PolicyDialog | None = None
        self.question: QMessageBox | None = None
        self.filter = QLineEdit(placeholderText="Filter policies…", clearButtonEnabled=True)
        self.filter.textChanged.connect(self.vm.set_filter)
        self.status = QLabel()
        self.status.setObjectName("summary")
        self.new_button = QPushButton("New policy…")
        self.edit_button = QPushButton("Edit…")
        self.delete_button = QPushButton("Delete…")
        self.reload_button = QPushButton("Reload")
        self._build()
        self._loaded = False
        follow(self, self.vm.subscribe, self.paint)
        self.paint(self.vm.state)

    def _build(self) -> None:
        buttons = (self.new_button, self.edit_button, self.delete_button, self.reload_button)
        row, _title = title_row(area("policies").heading, self.filter, *buttons)
        self.filter.setMinimumWidth(240)
        self.new_button.setDefault(True)
        self.new_button.clicked.connect(self.new)
        self.edit_button.clicked.connect(self.edit)
        self.delete_button.clicked.connect(self.delete)
        self.reload_button.clicked.connect(self.refresh)
        self.table.doubleClicked.connect(lambda *_: self.edit())
        self.table.selectionModel().selectionChanged.connect(self._selection)
        layout = view_layout(self)
        layout.addLayout(row)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)

    def showEvent(self, event: QShowEvent) -> None:
        """Load the first time the view is shown (the live stream keeps it fresh after)."""
        super().showEvent(event)
        if not self._loaded:
            self._loaded = True
            self.refresh()

    def refresh(self) -> None:
        """Reload every policy."""
        run_task(self, self.vm.refresh())

    def paint(self, state: Any) -> None:
        """Rows from the state (selection kept); the status line."""
        chosen = self.chosen()
        self.model.set_rows(state.visible)
        if chosen is not None:
            select_key(self.table, self.model, chosen.id)
        count = len(state.rows)
        text = f"{count} polic{'y' if count == 1 else 'ies'} · double-click a policy to edit it"
        show_status(self.status, text + (" · loading…" if state.loading else ""), state.error)
        self._selection()

    def chosen(self) -> PolicyRow | None:
        """The selected policy, or None."""
        row: PolicyRow | None = selected(self.table, self.model)
        return row

    def _selection(self, *_: Any) -> None:
        has = self.chosen() is not None
        self.edit_button.setEnabled(has)
        self.delete_button.setEnabled(has)

    def new(self) -> PolicyDialog:
        """Open the create dialog."""
        return self._open(PolicyDialog(self.vm, parent=self))

    def edit(self) -> PolicyDialog | None:
        """Open the edit dialog of the selected policy."""
        row = self.chosen()
        if row is None:
            return None
        return self._open(PolicyDialog(self.vm, row.id, self.vm.draft_of(row.id), parent=self))

    def _open(self, dialog: PolicyDialog) -> PolicyDialog:
        self.dialog = dialog
        dialog.saved.connect(lambda row: show_status(self.status, f"saved policy {row.name!r}"))
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    def delete(self) -> QMessageBox | None:
        """Delete the selected policy after a confirmation."""
        row = self.chosen()
        if row is None:
            return None

        def confirmed() -> None:
            run_task(self, self.vm.delete(row.id))

        question = f"Delete the policy {row.name!r}? The secrets it selects stop rotating."
        self.question = ask(self, question, "Delete", confirmed)
        return self.question
