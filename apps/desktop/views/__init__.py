"""One QWidget per view of the main window, each ``XxxView(shell, parent=None)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontMetrics
from PySide6.QtWidgets import QHBoxLayout, QHeaderView, QLabel, QTableView, QVBoxLayout, QWidget


def title_row(text: str, *extra: QWidget) -> tuple[QHBoxLayout, QLabel]:
    """A view's title on the left and ``extra`` widgets (buttons) on the right."""
    row = QHBoxLayout()
    title = QLabel(text)
    title.setObjectName("title")
    row.addWidget(title)
    row.addStretch(1)
    for widget in extra:
        row.addWidget(widget)
    return row, title


def view_layout(widget: QWidget) -> QVBoxLayout:
    """The standard margins and spacing of a view."""
    layout = QVBoxLayout(widget)
    layout.setContentsMargins(16, 12, 16, 12)
    layout.setSpacing(8)
    return layout


def error_label() -> QLabel:
    """A red line for a load error (hidden while there is none)."""
    label = QLabel()
    label.setObjectName("fieldError")
    label.setWordWrap(True)
    label.hide()
    return label


def show_error(label: QLabel, message: str | None) -> None:
    """Show ``message`` in an error label, or hide it."""
    label.setText(message or "")
    label.setVisible(bool(message))


def fast_table(widths: tuple[int, ...], stretch: int | None = None) -> QTableView:
    """A row-selecting table with fixed row heights (so 10,000 rows cost nothing to lay out)."""
    table = QTableView()
    table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QTableView.SelectionMode.SingleSelection)
    table.setAlternatingRowColors(True)
    table.setShowGrid(False)
    table.setWordWrap(False)
    table.setEditTriggers(QTableView.EditTrigger.NoEditTriggers)
    vertical = table.verticalHeader()
    vertical.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    vertical.setDefaultSectionSize(26)
    vertical.hide()
    horizontal = table.horizontalHeader()
    horizontal.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    horizontal.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    horizontal.setHighlightSections(False)
    table.setProperty("kv_widths", list(widths))
    table.setProperty("kv_stretch", -1 if stretch is None else stretch)
    horizontal.setStretchLastSection(stretch is None)
    return table


#: a header's padding and sort arrow, beyond its title's text
HEADER_ROOM = 34


def fit_headers(table: QTableView) -> None:
    """Every column at least as wide as its title (and the sort arrow), so no header is ever
    clipped; a cell or title that still does not fit ends in "…" (the one truncation rule of
    the desktop tables, as ``CutTable`` is the TUI's)."""
    header = table.horizontalHeader()
    header.setTextElideMode(Qt.TextElideMode.ElideRight)
    table.setTextElideMode(Qt.TextElideMode.ElideRight)
    model = table.model()
    if model is None:
        return
    font = header.font()
    font.setBold(True)  # the themes draw titles bold: measure them so
    metrics = QFontMetrics(font)
    for column in range(model.columnCount()):
        title = str(model.headerData(column, Qt.Orientation.Horizontal) or "")
        need = metrics.horizontalAdvance(title) + HEADER_ROOM
        if header.sectionResizeMode(column) != QHeaderView.ResizeMode.Stretch and (
            table.columnWidth(column) < need
        ):
            table.setColumnWidth(column, need)
        header.setMinimumSectionSize(min(header.minimumSectionSize(), need))


def attach(table: QTableView, model: Any) -> None:
    """Set the table's model, then its column widths (widths need the columns to exist)."""
    table.setModel(model)
    for column, width in enumerate(table.property("kv_widths") or ()):
        table.setColumnWidth(column, int(width))
    stretch = int(table.property("kv_stretch"))
    if stretch >= 0:
        table.horizontalHeader().setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
    fit_headers(table)


def follow(
    widget: QWidget,
    subscribe: Callable[[Callable[[Any], None]], Callable[[], None]],
    listener: Callable[[Any], None],
) -> None:
    """Subscribe ``listener`` to a view model while ``widget`` lives."""
    unsubscribe = subscribe(listener)
    widget.destroyed.connect(lambda *_: unsubscribe())
