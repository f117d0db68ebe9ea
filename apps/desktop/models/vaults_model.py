"""The fleet table: one row per vault, in the view model's (filtered, sorted) order."""

from __future__ import annotations

from typing import Any

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
