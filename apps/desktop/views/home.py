"""Home: what needs the operator now, most severe first; double-click (or Enter, or the
button) goes where it is fixed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from apps.core.navigation import area
from apps.core.timefmt import ago
from apps.core.viewmodels.home import NOUNS, HomeState, NeedItem
from apps.desktop import theme
from apps.desktop.views import (
    error_label,
    fit_headers,
    follow,
    show_error,
    title_row,
    view_layout,
)

if TYPE_CHECKING:
    from apps.core.shell import Shell

HEADERS = ("Severity", "What", "Problem", "Since")
TICK_MS = 30_000  # relative times move on by themselves


class HomeView(QWidget):
    """The "needs me now" list over the shell's fleet and alerts."""

    open_vault = Signal(str)
    open_alerts = Signal()

    def __init__(self, shell: Shell, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shell = shell
        self.vm = shell.home
        self._items: tuple[NeedItem, ...] = ()
        self._build()
        follow(self, self.vm.subscribe, self.show_state)
        self.show_state(self.vm.state)
        self._tick = QTimer(self)
        self._tick.timeout.connect(lambda: self.show_state(self.vm.state))
        self._tick.start(TICK_MS)

    def _build(self) -> None:
        layout = view_layout(self)
        self.go_button = QPushButton("Go fix it")
        header, _ = title_row(area("home").heading, self.go_button)
        layout.addLayout(header)
        self.summary = QLabel()
        self.summary.setObjectName("summary")
        layout.addWidget(self.summary)
        self.error = error_label()
        layout.addWidget(self.error)
        self.table = QTableWidget(0, len(HEADERS))
        self.table.setHorizontalHeaderLabels(list(HEADERS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.setColumnWidth(0, 90)
        self.table.setColumnWidth(1, 190)
        self.table.setColumnWidth(3, 110)
        fit_headers(self.table)
        self.table.cellDoubleClicked.connect(lambda row, _col: self.open_row(row))
        self.table.cellActivated.connect(lambda row, _col: self.open_row(row))
        self.go_button.clicked.connect(lambda: self.open_row(self.table.currentRow()))
        layout.addWidget(self.table, 1)

    def show_state(self, state: HomeState) -> None:
        """Repaint the list (a handful of rows) and the summary."""
        selected = (
            self._items[r].key if 0 <= (r := self.table.currentRow()) < len(self._items) else None
        )
        self._items = state.items
        now = self.shell.home.clock()
        self.table.setRowCount(len(state.items))
        for at, item in enumerate(state.items):
            what = NOUNS[item.category].capitalize()
            cells = (item.severity, what, item.title, ago(item.since, now))
            for col, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                cell.setToolTip(item.detail if col == 2 else text)
                if col == 0 and (color := theme.status_color(item.severity)) is not None:
                    cell.setForeground(color)
                self.table.setItem(at, col, cell)
            if item.key == selected:
                self.table.selectRow(at)
        self.summary.setText(state.summary())
        self.go_button.setEnabled(bool(state.items))
        show_error(self.error, state.error and f"Could not refresh: {state.error}")

    def open_row(self, at: int) -> None:
        """Go where the item at row ``at`` is fixed: its vault, or the alerts."""
        if not 0 <= at < len(self._items):
            return
        item = self._items[at]
        if item.goto == "vault" and item.vault_id:
            self.open_vault.emit(item.vault_id)
        else:
            self.open_alerts.emit()
