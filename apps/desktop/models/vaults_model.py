"""The fleet table: one row per vault, and a proxy that filters 10,000 rows per keystroke."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSortFilterProxyModel

from apps.core.rules import (
    cert_left_text,
    cert_tone,
    count_text,
    last_seen_text,
    shown_status,
    text_or_dash,
)
from apps.core.viewmodels.vaults import VaultRow
from apps.desktop import theme
from apps.desktop.models import RowTableModel

NAME, STATUS, LAST_SEEN, SECRETS, VERSION, CERT_EXPIRY, ID = range(7)
#: the view model's sort key of each column
SORT_KEYS = ("name", "status", "last_seen", "secret_count", "version", "cert_expiry", "id")


class VaultsTableModel(RowTableModel[VaultRow]):
    """Vaults in the view model's sort order; status coloured, cert expiry flagged."""

    HEADERS = ("Name", "Status", "Last seen", "Secrets", "Version", "Cert expires", "ID")

    def __init__(self, clock: Any = None, parent: Any = None) -> None:
        super().__init__(clock, parent)
        self.haystacks: list[str] = []

    def set_rows(self, rows: Any) -> None:
        """Replace every row and the filter's haystacks."""
        self.haystacks = [r.haystack for r in rows]
        super().set_rows(rows)

    def update_row(self, key: str, row: VaultRow) -> bool:
        """Replace one vault (and its haystack); dataChanged for that row only."""
        at = self.row_of(key)
        if at is not None:
            self.haystacks[at] = row.haystack
        return super().update_row(key, row)

    def key(self, row: VaultRow) -> str:
        """The vault id."""
        return row.id

    def cell(self, row: VaultRow, column: int) -> str:
        """The text of one cell."""
        if column == NAME:
            return row.name
        if column == STATUS:
            return shown_status(row)
        if column == LAST_SEEN:
            return last_seen_text(shown_status(row), row.last_seen, self.clock())
        if column == SECRETS:
            return count_text(row.secret_count)
        if column == VERSION:
            return text_or_dash(row.version)
        if column == CERT_EXPIRY:
            return cert_left_text(row.cert_expiry, self.clock())
        return row.id

    def foreground(self, row: VaultRow, column: int) -> Any:
        """Status colours; certificate time left red when past, amber within a few hours."""
        if column == STATUS:
            return theme.status_color(shown_status(row))
        if column == CERT_EXPIRY:
            level = cert_tone(row.cert_expiry, self.clock())
            return theme.status_color(level) if level else None
        return None

    def tooltip(self, row: VaultRow, column: int) -> str | None:
        """The exact time behind a relative one."""
        if column == LAST_SEEN and row.last_seen is not None:
            return row.last_seen.astimezone().isoformat(timespec="seconds")
        return None

    def sort_value(self, row: VaultRow, column: int) -> Any:
        """Raw values, so numbers and dates sort as such."""
        return getattr(row, SORT_KEYS[column]) if column != STATUS else shown_status(row)


class VaultsProxy(QSortFilterProxyModel):
    """Case-insensitive substring filter on name, id, status and version (precomputed)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._needle = ""

    @property
    def needle(self) -> str:
        """The current filter, lower-cased."""
        return self._needle

    def set_filter(self, text: str) -> None:
        """Show only rows containing ``text``."""
        needle = text.strip().lower()
        if needle == self._needle:
            return
        self.beginFilterChange()
        self._needle = needle
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(
        self, source_row: int, source_parent: QModelIndex | QPersistentModelIndex
    ) -> bool:
        """A row passes when its haystack contains the filter."""
        if not self._needle:
            return True
        source = self.sourceModel()
        assert isinstance(source, VaultsTableModel)
        return self._needle in source.haystacks[source_row]
