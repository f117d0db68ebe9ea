"""Qt table models fed from view-model states, and the cell formatting they share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
)

from apps.core.rowdiff import updates_in_place

R = TypeVar("R")
Index = QModelIndex | QPersistentModelIndex
Clock = Callable[[], datetime]

#: the row object itself, for views that act on a selection
ROW_ROLE = Qt.ItemDataRole.UserRole + 1
#: a sortable raw value (datetime, int, str) for a proxy's sortRole
SORT_ROLE = Qt.ItemDataRole.UserRole + 2
DASH = "—"


def utcnow() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


def stamp(moment: datetime | None) -> str:
    """A local date and time to the minute ("—" for None)."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M") if moment is not None else DASH


class RowTableModel(QAbstractTableModel, Generic[R]):
    """A read-only table of frozen row objects with a key per row.

    Subclasses set ``HEADERS`` and implement ``key(row)`` and ``cell(row, column)``; optional
    ``foreground``/``tooltip``/``sort_value`` hooks. ``set_rows`` resets; ``update_row``
    replaces one row and emits ``dataChanged`` for that row only.
    """

    HEADERS: tuple[str, ...] = ()

    def __init__(self, clock: Clock | None = None, parent: Any = None) -> None:
        super().__init__(parent)
        self.clock: Clock = clock or utcnow
        self._rows: list[R] = []
        self._index: dict[str, int] = {}

    # ------------------------------------------------------------ hooks
    def key(self, row: R) -> str:
        """The row's unique key (an id)."""
        raise NotImplementedError

    def cell(self, row: R, column: int) -> str:
        """The text shown in one cell."""
        raise NotImplementedError

    def foreground(self, row: R, column: int) -> Any:
        """A QColor for one cell, or None."""
        return None

    def tooltip(self, row: R, column: int) -> str | None:
        """A tooltip for one cell, or None."""
        return None

    def sort_value(self, row: R, column: int) -> Any:
        """What a proxy sorts one cell by (default: its text)."""
        return self.cell(row, column)

    # ------------------------------------------------------------ rows
    def set_rows(self, rows: Sequence[R]) -> None:
        """Replace every row (one model reset)."""
        self.beginResetModel()
        self._rows = list(rows)
        self._index = {self.key(r): i for i, r in enumerate(self._rows)}
        self.endResetModel()

    def apply_rows(self, rows: Sequence[R], many: int = 200) -> None:
        """Show ``rows``: nothing when they are the rows shown, ``dataChanged`` for rows changed
        in place (same keys, same order), else one reset (also past ``many`` changed rows)."""
        if not self._rows and not rows:
            return
        changed = updates_in_place(self._rows, rows, self.key) if self._rows else None
        if changed is None or len(changed) > many:
            self.set_rows(rows)
            return
        for _, row in changed:
            self.update_row(self.key(row), row)

    def update_row(self, key: str, row: R) -> bool:
        """Replace the row with ``key``; dataChanged for that row only. False if not present."""
        at = self._index.get(key)
        if at is None:
            return False
        self._rows[at] = row
        self.dataChanged.emit(self.index(at, 0), self.index(at, len(self.HEADERS) - 1))
        return True

    def rows(self) -> list[R]:
        """The rows in model order (a copy)."""
        return list(self._rows)

    def row_at(self, at: int) -> R:
        """The row object at a source row number."""
        return self._rows[at]

    def row_of(self, key: str) -> int | None:
        """The source row number of ``key``, or None."""
        return self._index.get(key)

    # ------------------------------------------------------------ Qt
    def rowCount(self, parent: Index = QModelIndex()) -> int:
        """Rows (none under a valid parent: this is a flat table)."""
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        """Columns."""
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        """Column titles."""
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        """A cell's text, colour, tooltip, row object or sort value."""
        if not index.isValid():
            return None
        row, column = self._rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self.cell(row, column)
        if role == Qt.ItemDataRole.ForegroundRole:
            return self.foreground(row, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.tooltip(row, column)
        if role == ROW_ROLE:
            return row
        if role == SORT_ROLE:
            return self.sort_value(row, column)
        return None
