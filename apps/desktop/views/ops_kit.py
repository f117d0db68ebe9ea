"""Pieces the operations views share: field errors, filtered tables, status lines, asking."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QSortFilterProxyModel, Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from apps.desktop import theme
from apps.desktop.models import SORT_ROLE, RowTableModel
from apps.desktop.views import error_label, fast_table, fit_headers
from common.errors import KeyVaultError


def show_status(label: QLabel, text: str, error: str | None = None) -> None:
    """A status line: ``text`` in the muted colour, or ``⚠ error`` in red."""
    if error:
        colour = theme.status_color("critical")
        label.setStyleSheet(f"color: {colour.name()};" if colour else "")
        label.setText(f"⚠ {error}")
    else:
        label.setStyleSheet("")
        label.setText(text)


class FieldErrors:
    """One error label per form field plus one for the whole form."""

    def __init__(self, fields: list[str]) -> None:
        self.labels = {name: error_label() for name in fields}
        self.form = error_label()

    def clear(self) -> None:
        """Hide every message."""
        for label in (*self.labels.values(), self.form):
            label.clear()
            label.hide()

    def show(self, error: KeyVaultError) -> str | None:
        """Put the message next to ``details["field"]`` (or under the form); returns the field."""
        self.clear()
        field = error.details.get("field") if isinstance(error.details, dict) else None
        label = self.labels.get(field) if isinstance(field, str) else None
        (label or self.form).setText(error.message)
        (label or self.form).show()
        return field if label is not None else None

    def show_all(self, errors: dict[str, str]) -> str | None:
        """Every message next to its field at once (``""``/unknown: under the form); returns
        the first field that has one."""
        self.clear()
        first: str | None = None
        general = []
        for field, message in errors.items():
            label = self.labels.get(field)
            if label is None:
                general.append(message)
                continue
            label.setText(message)
            label.show()
            first = first or field
        if general:
            self.form.setText("\n".join(general))
            self.form.show()
        return first

    def text(self, field: str) -> str:
        """The message shown next to ``field`` ('' when none)."""
        label = self.labels[field]
        return label.text() if not label.isHidden() else ""


def proxy_for(
    model: RowTableModel[Any], column: int = -1, parent: QObject | None = None
) -> QSortFilterProxyModel:
    """A case-insensitive filter (``column`` or every column) that sorts by ``SORT_ROLE``."""
    proxy = QSortFilterProxyModel(parent)
    proxy.setSourceModel(model)
    proxy.setSortRole(SORT_ROLE)
    proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
    proxy.setFilterKeyColumn(column)
    return proxy


def table_for(
    proxy: QSortFilterProxyModel, widths: tuple[int, ...], stretch: int | None = None
) -> QTableView:
    """A sortable, row-selecting table over ``proxy`` with starting column widths."""
    table = fast_table(widths, stretch)
    table.setModel(proxy)  # (re)creates the header sections: widths and stretch after it
    header = table.horizontalHeader()
    for column, width in enumerate(widths):
        table.setColumnWidth(column, width)
    if stretch is not None:
        header.setStretchLastSection(False)
        header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    fit_headers(table)
    table.setSortingEnabled(True)
    header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
    return table


def selected(table: QTableView, model: RowTableModel[Any]) -> Any | None:
    """The row object selected in ``table`` (a view over a proxy of ``model``), or None."""
    rows = table.selectionModel().selectedRows() if table.selectionModel() else []
    if not rows:
        return None
    proxy = table.model()
    index = proxy.mapToSource(rows[0]) if isinstance(proxy, QSortFilterProxyModel) else rows[0]
    return model.row_at(index.row()) if index.isValid() else None


def select_key(table: QTableView, model: RowTableModel[Any], key: str) -> bool:
    """Select the row with ``key`` (True if it is shown)."""
    at = model.row_of(key)
    proxy = table.model()
    if at is None or not isinstance(proxy, QSortFilterProxyModel):
        return False
    index = proxy.mapFromSource(model.index(at, 0))
    if not index.isValid():
        return False
    table.selectRow(index.row())
    return True


def ask(parent: QWidget, question: str, yes: str, then: Callable[[], None]) -> QMessageBox:
    """A window-modal question with ``yes`` and Cancel (the default); ``then()`` on ``yes``."""
    box = QMessageBox(QMessageBox.Icon.Question, "KeyVault", question, parent=parent)
    yes_button = box.addButton(yes, QMessageBox.ButtonRole.AcceptRole)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.buttonClicked.connect(lambda button: then() if button is yes_button else None)
    box.open()
    return box


class ShownOncePanel(QFrame):
    """A token shown only now (an enrollment token, an invitation or password reset): a
    framed title, the exact command to run (read-only, monospace), a copy button and a note.
    ``show_command`` fills it, ``forget`` clears and hides it; the views connect
    ``copy_button`` to their clipboard copy (wiped after 30 s)."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("shownOnce")
        colour = theme.status_color("ok")
        border = colour.name() if colour else "#1a7f37"
        self.setStyleSheet(
            f"QFrame#shownOnce {{ border: 2px solid {border}; border-radius: 6px; }}"
        )
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.command = QLineEdit()
        self.command.setReadOnly(True)
        self.command.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.copy_button = QPushButton("Copy command")
        self.note = QLabel()
        self.note.setObjectName("muted")
        self.note.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.command, 1)
        row.addWidget(self.copy_button)
        self.body = QVBoxLayout(self)
        self.body.addWidget(self.title)
        self.body.addLayout(row)
        self.body.addWidget(self.note)
        self.hide()

    def show_command(self, title: str, command: str, note: str) -> None:
        """Show ``command`` under ``title`` (rich text) with ``note`` below it."""
        self.title.setText(title)
        self.command.setText(command)
        self.command.setCursorPosition(0)
        self.note.setText(note)
        self.show()

    def forget(self) -> None:
        """Clear the command (the token goes with it) and hide."""
        self.command.clear()
        self.note.clear()
        self.hide()
