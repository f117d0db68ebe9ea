"""Helpers for the DataTables of the operations screens: every cell that does not fit is cut
with "…" (never silently), columns fit the terminal's width, refills keep the cursor."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.widget import Widget
from textual.widgets import DataTable, Static

Cell = str | Text
SCROLLBAR = 2  # the vertical scrollbar's cells, kept free so no column hides under it


@dataclass(frozen=True)
class Column:
    """One column: its title, key, width (None: as wide as its widest cell) and the width
    it keeps when the terminal is too narrow for every column (``keep``: e.g. a timestamp,
    useless once cut)."""

    title: str
    key: str
    width: int | None = None
    keep: int = 0


def cut(cell: object) -> object:
    """A cell that ends in "…" when its column is too narrow: text of any kind becomes a
    one-line Text that ellipsises (plain text, never read as markup)."""
    if isinstance(cell, str):
        cell = Text(cell, end="")
    if isinstance(cell, Text):
        cell.no_wrap, cell.overflow = True, "ellipsis"
    return cell


def fit_widths(natural: Sequence[int], minimum: Sequence[int], room: int) -> list[int]:
    """Column widths that fit ``room`` cells: as natural when they fit, else the widest
    columns give way first (all cut to one cap), none below its ``minimum``."""
    if sum(natural) <= room:
        return list(natural)
    low, high = 0, max(natural)
    while low < high:  # the largest cap whose widths still fit
        cap = (low + high + 1) // 2
        if sum(min(n, max(cap, m)) for n, m in zip(natural, minimum, strict=True)) <= room:
            low = cap
        else:
            high = cap - 1
    return [min(n, max(low, m)) for n, m in zip(natural, minimum, strict=True)]


def _width(cell: object) -> int:
    if isinstance(cell, Text):
        return cell.cell_len
    return cell_len(str(cell))


class CutTable(DataTable[Any]):
    """A DataTable whose columns always fit its width: when the rows are wider than the
    terminal the widest columns give way and their cells end in "…"; no sideways scrolling
    hides a column. Fill it with :meth:`fill` (or :func:`fill_table`)."""

    def __init__(self, columns: Sequence[Column | str], **kwargs: Any) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", True)
        super().__init__(**kwargs)
        self.specs = tuple(
            c if isinstance(c, Column) else Column(c, f"c{i}") for i, c in enumerate(columns)
        )
        self.shown: list[tuple[str, tuple[object, ...]]] = []
        self.widths: tuple[int, ...] = ()
        self._set_columns(self.fitted())

    def fitted(self) -> tuple[int, ...]:
        """Each column's width for the rows shown and the current width of the table."""
        natural, minimum = [], []
        for index, spec in enumerate(self.specs):
            widest = max((_width(cells[index]) for _, cells in self.shown), default=0)
            title = cell_len(spec.title)
            natural.append(spec.width or max(title, widest, 1))
            minimum.append(min(natural[-1], max(title, 4, spec.keep)))
        width = self.size.width or (self.app.size.width if self.is_attached else 0)
        if not width:
            return tuple(natural)
        room = width - SCROLLBAR - 2 * self.cell_padding * len(self.specs)
        return tuple(fit_widths(natural, minimum, room))

    def _set_columns(self, widths: tuple[int, ...]) -> None:
        self.clear(columns=True)
        for spec, width in zip(self.specs, widths, strict=True):
            self.add_column(spec.title, key=spec.key, width=width)
        self.widths = widths

    def fill(self, rows: Iterable[tuple[str, Sequence[object]]]) -> None:
        """Replace every row (key, cells), keeping the cursor on the same key when it still
        exists; columns are refitted to the new rows."""
        self.shown = [(key, tuple(cut(c) for c in cells)) for key, cells in rows]
        self._repaint()

    def _repaint(self) -> None:
        current = selected_key(self)
        widths = self.fitted()
        if widths != self.widths:
            self._set_columns(widths)
        else:
            self.clear()
        for key, cells in self.shown:
            self.add_row(*cells, key=key)
        if current is not None and current in self.rows:
            self.move_cursor(row=self.get_row_index(current), animate=False)

    def on_resize(self, event: events.Resize) -> None:
        """A wider or narrower terminal: refit the columns."""
        if self.fitted() != self.widths:
            self._repaint()


def table_body(
    table_id: str, columns: Sequence[Column | str], *, status: bool = True
) -> Iterator[Widget]:
    """The body most list screens share: a summary line, an error line (hidden while there
    is no error) and the table."""
    if status:
        yield Static(id="summary", classes="summary")
        yield Static(id="error", classes="error-line")
    yield CutTable(columns, id=table_id)


def add_cut_row(table: DataTable[Any], cells: Sequence[object], key: str) -> None:
    """``table.add_row`` with every text cell cut with "…" rather than silently."""
    table.add_row(*(cut(c) for c in cells), key=key)


def fill_table(table: DataTable[Any], rows: Iterable[tuple[str, Sequence[Any]]]) -> None:
    """Replace every row (key, cells), keeping the cursor on the same key when it still exists
    (a :class:`CutTable` also refits its columns)."""
    if isinstance(table, CutTable):
        table.fill(rows)
        return
    current = selected_key(table)
    table.clear()
    for key, cells in rows:
        add_cut_row(table, cells, key)
    if current is not None and current in table.rows:
        table.move_cursor(row=table.get_row_index(current), animate=False)


def selected_key(table: DataTable[Any]) -> str | None:
    """The key of the row under the cursor, or None for an empty table."""
    if table.row_count == 0 or table.cursor_row < 0:
        return None
    row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
    return row_key.value


def when(value: object) -> str:
    """A datetime as 'YYYY-MM-DD HH:MM' (UTC), anything else as text, None as '—'."""
    if value is None:
        return "—"
    strftime = getattr(value, "strftime", None)
    return strftime("%Y-%m-%d %H:%M") if strftime else str(value)
