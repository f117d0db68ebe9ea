"""The central audit log: action and source filters (server), a text filter (local), load more."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QStringListModel, Qt
from PySide6.QtGui import QHideEvent
from PySide6.QtWidgets import (
    QComboBox,
    QCompleter,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from apps.core.navigation import area
from apps.desktop.models.audit_model import SEQ, AuditTableModel
from apps.desktop.tasks import run_task
from apps.desktop.views import follow, title_row, view_layout
from apps.desktop.views.ops_kit import proxy_for, show_status, table_for

if TYPE_CHECKING:
    from PySide6.QtGui import QShowEvent

    from apps.core.shell import Shell

CONTROL_PLANE = "control_plane"
WIDTHS = (60, 130, 180, 170, 230, 200, 80)


class AuditView(QWidget):
    """Who did what, when, from where — metadata only, newest first."""

    def __init__(self, shell: Shell, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shell = shell
        self.vm = shell.audit
        self.model = AuditTableModel(parent=self, names=shell.names)
        self.proxy = proxy_for(self.model, parent=self)
        self.table = table_for(self.proxy, WIDTHS, stretch=4)
        self.table.sortByColumn(SEQ, Qt.SortOrder.DescendingOrder)
        self.action = QLineEdit(placeholderText="Action (exact), e.g. policy.create")
        self.action.setClearButtonEnabled(True)
        self.completions = QStringListModel(self)
        completer = QCompleter(self.completions, self)
        completer.setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
        self.action.setCompleter(completer)
        self.source = QComboBox()
        self.source.setMinimumWidth(220)
        self.text = QLineEdit(placeholderText="Search the loaded entries…")
        self.text.setClearButtonEnabled(True)
        self.more_button = QPushButton("Load more")
        self.status = QLabel()
        self.status.setObjectName("summary")
        self._sources: tuple[tuple[str, str], ...] = ()
        self._build()
        follow(self, self.vm.subscribe, self.paint)
        follow(self, shell.vaults.subscribe, lambda _state: self._fill_sources())
        self._fill_sources()
        self.paint(self.vm.state)

    def _build(self) -> None:
        reload_button = QPushButton("Reload")
        reload_button.clicked.connect(self.refresh)
        self.more_button.clicked.connect(self.load_more)
        self.action.returnPressed.connect(self._action_changed)
        self.action.textChanged.connect(self._action_cleared)
        self.source.currentIndexChanged.connect(self._source_changed)
        self.text.textChanged.connect(self._text_changed)
        row, _title = title_row(area("audit").heading, reload_button)
        filters = QHBoxLayout()
        filters.addWidget(self.action, 2)
        filters.addWidget(self.source, 1)
        filters.addWidget(self.text, 2)
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.more_button)
        layout = view_layout(self)
        layout.addLayout(row)
        layout.addLayout(filters)
        layout.addWidget(self.table, 1)
        layout.addLayout(bottom)

    def showEvent(self, event: QShowEvent) -> None:
        """Reload every time the view is shown; new entries then arrive on top by themselves."""
        super().showEvent(event)
        self.vm.live = True
        self.refresh()

    def hideEvent(self, event: QHideEvent) -> None:
        """Not shown: stop following new entries."""
        super().hideEvent(event)
        self.vm.live = False

    def refresh(self) -> None:
        """Load the first page again."""
        run_task(self, self.vm.refresh())

    def load_more(self) -> None:
        """Fetch the next page."""
        if self.vm.state.has_more:
            run_task(self, self.vm.load_more())

    def set_action(self, action: str) -> None:
        """Filter by an exact action on the server ('' clears)."""
        self.action.setText(action)
        self._action_changed()

    def set_source(self, source: str | None) -> None:
        """Filter by a source on the server (None: any)."""
        at = self.source.findData(source) if source else 0
        self.source.setCurrentIndex(max(at, 0))

    def _action_cleared(self, text: str) -> None:
        if not text:
            self._action_changed()

    def _action_changed(self) -> None:
        if self.action.text().strip() != (self.vm.state.action or ""):
            run_task(self, self.vm.set_filter(action=self.action.text()))

    def _source_changed(self, at: int) -> None:
        source = self.source.itemData(at) if at > 0 else None
        if source != self.vm.state.source:
            run_task(self, self.vm.set_filter(source=source or ""))

    def _text_changed(self, text: str) -> None:
        self.vm.set_text(text)  # local, in the view model (as in the TUI): no reload

    def _fill_sources(self) -> None:
        """Any source, the control plane, and each vault (rebuilt when vaults come or go)."""
        vaults = tuple(sorted((v.name, v.id) for v in self.shell.vaults.state.rows))
        if vaults == self._sources and self.source.count():
            return
        self._sources = vaults
        current = self.vm.state.source
        self.source.blockSignals(True)
        self.source.clear()
        self.source.addItem("Any source", None)
        self.source.addItem("Control plane", CONTROL_PLANE)
        for name, vault_id in vaults:
            self.source.addItem(f"{name} ({vault_id})", vault_id)
        self.source.setCurrentIndex(max(self.source.findData(current), 0) if current else 0)
        self.source.blockSignals(False)

    def paint(self, state: Any) -> None:
        """The loaded rows the text filter keeps (the view model's ``visible``); the status."""
        self.model.apply_rows(state.visible)
        seen = self.vm.suggest("action", "")
        if seen != self.completions.stringList():
            self.completions.setStringList(seen)  # action names suggested as you type
        self.more_button.setEnabled(state.has_more and not state.loading)
        self._status(state)

    def _status(self, state: Any) -> None:
        shown, loaded = len(state.visible), len(state.rows)
        text = f"{loaded} entr{'y' if loaded == 1 else 'ies'}"
        needle = state.text.strip()
        if needle:
            text = f"{shown} of {loaded} loaded entries match {needle!r}"
        if state.has_more:
            text += " · more on the server"
        show_status(self.status, text + (" · loading…" if state.loading else ""), state.error)
