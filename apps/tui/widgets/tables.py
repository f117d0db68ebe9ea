"""Helpers for the DataTables of the operations screens: refill without losing the cursor."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

Cell = str | Text


def cut(cell: object) -> object:
    """A styled text cell that ends in "…" when its column is too narrow (the long ones —
    names, messages, problems — are Text; short plain cells stay as they are)."""
    if isinstance(cell, Text):
        cell.no_wrap, cell.overflow = True, "ellipsis"
    return cell


def add_cut_row(table: DataTable[Any], cells: Sequence[object], key: str) -> None:
    """``table.add_row`` with every text cell cut with "…" rather than silently."""
    table.add_row(*(cut(c) for c in cells), key=key)


def fill_table(table: DataTable[Cell], rows: Iterable[tuple[str, Sequence[Cell]]]) -> None:
    """Replace every row (key, cells), keeping the cursor on the same key when it still exists."""
    current = selected_key(table)
    table.clear()
    for key, cells in rows:
        add_cut_row(table, cells, key)
    if current is not None and current in table.rows:
        table.move_cursor(row=table.get_row_index(current), animate=False)


def selected_key(table: DataTable[Cell]) -> str | None:
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
