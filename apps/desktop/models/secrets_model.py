"""The secrets table of one agent (``SecretRow``): values masked unless revealed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apps.core.forms import labels_text
from apps.core.viewmodels.agent_secrets import SecretRow
from apps.desktop import theme
from apps.desktop.models import DASH, RowTableModel, stamp

NAME, STATE, VALUE, VERSION, LABELS, UPDATED = range(6)
MASK = "••••••••"


def secret_key(row: SecretRow) -> str:
    """A row's key: a name can be listed twice (live and deleted)."""
    return f"{row.name}\t{'deleted' if row.deleted else 'live'}"


class SecretsTableModel(RowTableModel[SecretRow]):
    """Secrets (metadata); the values of those revealed show in the Value column."""

    HEADERS = ("Name", "State", "Value", "Version", "Labels", "Updated")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent=parent)
        self._revealed: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"SecretsTableModel(rows={len(self._rows)}, revealed={len(self._revealed)})"

    def key(self, row: SecretRow) -> str:
        """Name plus live/deleted."""
        return secret_key(row)

    def set_revealed(self, revealed: Mapping[str, str]) -> None:
        """Show these values (name → value); every other value stays masked."""
        if dict(revealed) == self._revealed:
            return
        self._revealed = dict(revealed)
        if self._rows:
            self.dataChanged.emit(self.index(0, VALUE), self.index(len(self._rows) - 1, VALUE))

    def value_text(self, row: SecretRow) -> str:
        """The revealed value of a live secret, or the mask."""
        if not row.deleted and row.name in self._revealed:
            return self._revealed[row.name]
        return MASK

    def cell(self, row: SecretRow, column: int) -> str:
        """A cell's text."""
        values = (
            row.name,
            "deleted" if row.deleted else "active",
            self.value_text(row),
            str(row.version),
            labels_text(row.labels) or DASH,
            stamp(row.updated_at),
        )
        return values[column]

    def tooltip(self, row: SecretRow, column: int) -> str | None:
        """The description on the name (never a value)."""
        return row.description or None if column == NAME else None

    def sort_value(self, row: SecretRow, column: int) -> Any:
        """Version and time sort as numbers; values never sort (they may be masked)."""
        if column == VERSION:
            return row.version
        if column == UPDATED:
            return row.updated_at.timestamp() if row.updated_at else 0.0
        if column == VALUE:
            return ""
        return self.cell(row, column).lower()

    def foreground(self, row: SecretRow, column: int) -> Any:
        """Deleted in red, active in green."""
        if column == STATE:
            return theme.status_color("critical" if row.deleted else "ok")
        return None
