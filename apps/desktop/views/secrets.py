"""Secrets on one agent, straight over mutual TLS: masked values, reveal, copy, versions, changes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from apps.core.clipboard import copied_message
from apps.desktop import clipboard
from apps.desktop.models import stamp
from apps.desktop.models.secrets_model import NAME, SecretsTableModel, secret_key
from apps.desktop.tasks import run_task
from apps.desktop.views import fit_headers, follow, title_row, view_layout
from apps.desktop.views.ops_kit import ask, proxy_for, select_key, selected, show_status, table_for
from apps.desktop.views.secret_dialog import SecretDialog

if TYPE_CHECKING:
    from PySide6.QtGui import QHideEvent

    from apps.core.agents import AgentProfile
    from apps.core.shell import Shell
    from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel, SecretRow
    from common.errors import KeyVaultError

WIDTHS = (190, 64, 110, 62, 150, 130)  # a masked value is short; a revealed one ends in "…"


class SecretsView(QWidget):
    """The secrets of one agent: filter, reveal/copy, versions, new/edit, rotate, delete."""

    back = Signal()

    def __init__(
        self,
        shell: Shell,
        agent: AgentProfile,
        parent: QWidget | None = None,
        *,
        model: AgentSecretsViewModel | None = None,
        guard: clipboard.ClipboardGuard | None = None,
    ) -> None:
        super().__init__(parent)
        self.shell = shell
        self.agent = agent
        self.vm: AgentSecretsViewModel | None = None
        self.guard = guard or clipboard.guard()
        self.model = SecretsTableModel(parent=self)
        self.proxy = proxy_for(self.model, NAME, self)
        self.table = table_for(self.proxy, WIDTHS, stretch=4)
        self.table.sortByColumn(NAME, Qt.SortOrder.AscendingOrder)
        self.versions = QTableWidget(0, 4)
        self.versions_title = QLabel("Versions")
        self.filter = QLineEdit(placeholderText="Filter by name…", clearButtonEnabled=True)
        self.show_deleted = QCheckBox("Show deleted")
        self.status = QLabel("connecting…")
        self.status.setObjectName("summary")
        self.buttons: dict[str, QPushButton] = {}
        self.dialog: SecretDialog | None = None
        self.question: QMessageBox | None = None
        self._build()
        if model is not None:
            self._ready(model)
        else:  # the token comes from the keyring: off the GUI thread
            opening = asyncio.to_thread(shell.agent_secrets, agent)
            run_task(self, opening, done=self._ready, failed=self._unavailable)

    # ------------------------------------------------------------ layout
    def _build(self) -> None:
        back = QPushButton("← Agents")
        back.clicked.connect(self.leave)
        where = QLabel(f"{self.agent.url} · mutual TLS")
        where.setObjectName("muted")
        row, _title = title_row(f"Secrets on {self.agent.name}", where, back)
        actions = (
            ("new", "New…", self.new),
            ("edit", "Edit…", self.edit),
            ("reveal", "Reveal", self.toggle_reveal),
            ("copy", "Copy", self.copy),
            ("rotate", "Rotate…", self.rotate),
            ("delete", "Delete…", self.delete),
            ("undelete", "Undelete", self.undelete),
            ("reload", "Reload", self.refresh),
        )
        bar = QHBoxLayout()
        bar.addWidget(self.filter, 1)
        bar.addWidget(self.show_deleted)
        for key, text, slot in actions:
            button = QPushButton(text)
            button.clicked.connect(slot)
            self.buttons[key] = button
            bar.addWidget(button)
        self.filter.textChanged.connect(self._filter)
        self.show_deleted.toggled.connect(self._toggle_deleted)
        self.table.doubleClicked.connect(lambda *_: self.edit())
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._selection())
        side = self._versions_panel()
        split = QSplitter()
        split.addWidget(self.table)
        split.addWidget(side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([690, 400])  # the versions panel: its four columns fit
        layout = view_layout(self)
        layout.addLayout(row)
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        layout.addWidget(self.status)
        self._selection()

    def _versions_panel(self) -> QWidget:
        """The versions of the selected secret, beside the table."""
        self.versions.setHorizontalHeaderLabels(["Version", "Created", "Origin", ""])
        self.versions.verticalHeader().hide()
        self.versions.setShowGrid(False)
        self.versions.setAlternatingRowColors(True)
        header = self.versions.horizontalHeader()
        header.setStretchLastSection(True)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.versions.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for column, width in enumerate((52, 118, 62)):
            self.versions.setColumnWidth(column, width)
        fit_headers(self.versions)  # "Version" was clipped to "Versio"
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        self.versions_title.setObjectName("muted")
        side_layout.addWidget(self.versions_title)
        side_layout.addWidget(self.versions, 1)
        return side

    # ------------------------------------------------------------ model
    def _filter(self, text: str) -> None:
        """The name filter lives in the view model (as in the TUI); the table shows its rows."""
        if self.vm is not None:
            self.vm.set_filter(text)

    def _ready(self, vm: AgentSecretsViewModel) -> None:
        self.vm = vm
        vm.set_filter(self.filter.text())
        follow(self, vm.subscribe, self.paint)
        self.paint(vm.state)
        self.refresh()

    def _unavailable(self, error: KeyVaultError) -> None:
        show_status(self.status, "", error.message)

    def refresh(self) -> None:
        """Reload the list from the agent."""
        if self.vm is not None:
            run_task(self, self.vm.refresh())

    def paint(self, state: Any) -> None:
        """Rows (masked unless revealed, selection kept), versions, the status line."""
        chosen = self.chosen()
        if self.model.rows() != list(state.visible):
            self.model.set_rows(state.visible)
            if chosen is not None:
                select_key(self.table, self.model, secret_key(chosen))
        self.model.set_revealed(state.revealed)
        self._paint_versions(state)
        count = len(state.rows)
        text = f"{count} secret{'' if count == 1 else 's'}"
        text += " (deleted shown)" if state.show_deleted else ""
        show_status(self.status, text + (" · loading…" if state.loading else ""), state.error)
        self._selection()

    def _paint_versions(self, state: Any) -> None:
        self.versions_title.setText(
            f"Versions of {state.selected}" if state.selected else "Versions (select a secret)"
        )
        self.versions.setRowCount(len(state.versions))
        for at, version in enumerate(state.versions):
            cells = (
                f"v{version.version}",
                stamp(version.created_at),
                version.origin or "—",
                "current" if version.current else "",
            )
            for column, text in enumerate(cells):
                self.versions.setItem(at, column, QTableWidgetItem(text))

    # ------------------------------------------------------------ selection
    def chosen(self) -> SecretRow | None:
        """The selected secret, or None."""
        row: SecretRow | None = selected(self.table, self.model)
        return row

    def select(self, name: str, deleted: bool = False) -> bool:
        """Select a secret by name (True if it is shown)."""
        return select_key(self.table, self.model, f"{name}\t{'deleted' if deleted else 'live'}")

    def _selection(self) -> None:
        row, vm = self.chosen(), self.vm
        name = row.name if row is not None and not row.deleted else None
        for key in ("edit", "reveal", "copy", "rotate", "delete"):
            self.buttons[key].setEnabled(name is not None)
        self.buttons["undelete"].setEnabled(row is not None and row.deleted)
        self.buttons["new"].setEnabled(vm is not None)
        shown = vm is not None and name is not None and name in vm.state.revealed
        self.buttons["reveal"].setText("Hide" if shown else "Reveal")
        if vm is not None and name is not None and name != vm.state.selected:
            run_task(self, vm.versions(name))

    # ------------------------------------------------------------ values
    def toggle_reveal(self) -> None:
        """Show the selected value (fetched from the agent), or mask it again."""
        row, vm = self.chosen(), self.vm
        if row is None or vm is None:
            return
        if row.name in vm.state.revealed:
            vm.hide(row.name)
        else:
            run_task(self, vm.reveal(row.name))

    def copy(self) -> None:
        """Copy the selected value without showing it; the clipboard is wiped later."""
        row, vm = self.chosen(), self.vm
        if row is None or vm is None:
            return
        name = row.name

        def copied(value: str) -> None:
            self.guard.copy(value)
            show_status(self.status, copied_message(name, self.guard.clear_after_ms / 1000))

        run_task(self, vm.value_to_copy(name), done=copied)

    def hide_all(self) -> None:
        """Mask every revealed value."""
        if self.vm is not None:
            for name in list(self.vm.state.revealed):
                self.vm.hide(name)

    def hideEvent(self, event: QHideEvent) -> None:
        """Leaving the view masks every value again."""
        super().hideEvent(event)
        self.hide_all()

    def leave(self) -> None:
        """Back to the agents (values forgotten)."""
        self.hide_all()
        self.back.emit()

    # ------------------------------------------------------------ changes
    def new(self) -> SecretDialog | None:
        """Open the create dialog."""
        return self._open(None)

    def edit(self) -> SecretDialog | None:
        """Open the dialog that writes a new version of the selected secret."""
        row = self.chosen()
        return self._open(row) if row is not None and not row.deleted else None

    def _open(self, row: SecretRow | None) -> SecretDialog | None:
        if self.vm is None:
            return None
        dialog = SecretDialog(self.vm, row, parent=self)
        self.dialog = dialog
        dialog.saved.connect(self._saved)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    def _saved(self, row: SecretRow) -> None:
        show_status(self.status, f"saved {row.name} (version {row.version})")
        self.select(row.name)
        self._reload_versions(row)

    def _reload_versions(self, row: SecretRow) -> None:
        if self.vm is not None and self.vm.state.selected == row.name:
            run_task(self, self.vm.versions(row.name))

    def _confirm(self, question: str, yes: str, work: Any) -> QMessageBox | None:
        row, vm = self.chosen(), self.vm
        if row is None or vm is None:
            return None

        def confirmed() -> None:
            run_task(self, work(vm, row.name), done=self._reload_versions)

        self.question = ask(self, question.format(name=row.name), yes, confirmed)
        return self.question

    def rotate(self) -> QMessageBox | None:
        """Rotate the selected secret (a new value now) after a confirmation."""
        return self._confirm(
            "Rotate {name}? A new value is generated now.", "Rotate", lambda vm, n: vm.rotate(n)
        )

    def delete(self) -> QMessageBox | None:
        """Delete the selected secret (it can be undeleted) after a confirmation."""
        return self._confirm(
            "Delete {name}? You can undelete it later.", "Delete", lambda vm, n: vm.delete(n)
        )

    def undelete(self) -> None:
        """Bring the selected deleted secret back."""
        row, vm = self.chosen(), self.vm
        if row is not None and vm is not None and row.deleted:
            run_task(self, vm.undelete(row.name), done=lambda r: self.select(r.name))

    def _toggle_deleted(self, show: bool) -> None:
        if self.vm is not None:
            run_task(self, self.vm.set_show_deleted(show))
