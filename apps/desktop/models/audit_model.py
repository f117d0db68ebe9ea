"""The audit table: one row per audit entry (``AuditRow``), metadata only."""

from __future__ import annotations

from typing import Any

from apps.core.names import NameBook
from apps.core.viewmodels.audit import AuditRow
from apps.desktop import theme
from apps.desktop.models import DASH, RowTableModel, stamp

SEQ, AT, ACTOR, ACTION, TARGET, SOURCE, OUTCOME = range(7)


class AuditTableModel(RowTableModel[AuditRow]):
    """Audit entries, keyed by sequence number."""

    HEADERS = ("#", "When", "Actor", "Action", "Target", "Source", "Outcome")

    def __init__(
        self, clock: Any = None, parent: Any = None, names: NameBook | None = None
    ) -> None:
        super().__init__(clock, parent)
        self.names = names or NameBook()

    def key(self, row: AuditRow) -> str:
        """The entry's sequence number, as text."""
        return str(row.seq)

    def cell(self, row: AuditRow, column: int) -> str:
        """A cell's text."""
        values = (
            str(row.seq),
            stamp(row.at),
            self.names.label(row.actor) or DASH,
            row.action,
            self.names.label(row.target, row.vault_id) or DASH,
            self.names.source(row.source) or DASH,
            row.outcome or DASH,
        )
        return values[column]

    def tooltip(self, row: AuditRow, column: int) -> str | None:
        """Actor and target in full (the columns cut them short)."""
        return self.cell(row, column) if column in (ACTOR, TARGET) else None

    def sort_value(self, row: AuditRow, column: int) -> Any:
        """The sequence number sorts as a number (and so does the time, by it)."""
        if column in (SEQ, AT):
            return row.seq
        return self.cell(row, column).lower()

    def foreground(self, row: AuditRow, column: int) -> Any:
        """An outcome other than ok stands out."""
        if column == OUTCOME and row.outcome and row.outcome != "ok":
            return theme.status_color("critical")
        return None
