"""The alerts table: severity and state coloured, newest first (the view model's order)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtGui import QFont

from apps.core.viewmodels.alerts import SEVERITY_ORDER, AlertRow
from apps.desktop import theme
from apps.desktop.models import DASH, RowTableModel, stamp

SEVERITY, STATE, VAULT, MESSAGE, RAISED = range(5)


class AlertsTableModel(RowTableModel[AlertRow]):
    """Alerts; ``vault_name(id)`` turns a vault id into its name when known."""

    HEADERS = ("Severity", "State", "Vault", "Message", "Raised")

    def __init__(
        self,
        vault_name: Callable[[str], str | None] | None = None,
        clock: Any = None,
        parent: Any = None,
        humanize: Callable[[str, str | None], str] | None = None,
    ) -> None:
        super().__init__(clock, parent)
        self.vault_name = vault_name or (lambda _id: None)
        #: ids in a message → names (the shell's name book)
        self.humanize = humanize or (lambda text, _vault: text)

    def key(self, row: AlertRow) -> str:
        """The alert id."""
        return row.id

    def cell(self, row: AlertRow, column: int) -> str:
        """The text of one cell."""
        if column == SEVERITY:
            return row.severity
        if column == STATE:
            return row.state
        if column == VAULT:
            if row.vault_id is None:
                return DASH
            return self.vault_name(row.vault_id) or row.vault_id
        if column == MESSAGE:
            return self.humanize(row.message, row.vault_id)
        return stamp(row.raised_at)

    def foreground(self, row: AlertRow, column: int) -> Any:
        """Severity colours; resolved alerts muted."""
        if column == SEVERITY:
            return theme.status_color(row.severity)
        if row.state == "resolved":
            return theme.status_color("muted")
        return None

    def font_of(self, row: AlertRow) -> QFont | None:
        """Open alerts in bold."""
        if row.state != "open":
            return None
        font = QFont()
        font.setBold(True)
        return font

    def data(self, index: Any, role: int = 0) -> Any:
        """As the base, plus bold for open alerts."""
        from PySide6.QtCore import Qt

        if role == Qt.ItemDataRole.FontRole and index.isValid() and index.column() == SEVERITY:
            return self.font_of(self.row_at(index.row()))
        return super().data(index, role)

    def tooltip(self, row: AlertRow, column: int) -> str | None:
        """The full message and the alert's kind."""
        if column == MESSAGE:
            return f"{row.kind}: {row.message}"
        if column == VAULT and row.vault_id:
            return row.vault_id
        return None

    def sort_value(self, row: AlertRow, column: int) -> Any:
        """Severity by rank, times as times."""
        if column == SEVERITY:
            return SEVERITY_ORDER.get(row.severity, 9)
        if column == RAISED:
            return row.raised_at.timestamp() if row.raised_at else 0.0
        return self.cell(row, column)
