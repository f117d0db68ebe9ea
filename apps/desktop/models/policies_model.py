"""The policies table: one row per rotation policy (``PolicyRow``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apps.core.viewmodels.policies import PolicyRow
from apps.desktop.models import DASH, RowTableModel, stamp

NAME, SELECTS, EVERY, NOTICE, ROTATOR, VAULTS, UPDATED = range(7)


def days_text(days: int | float) -> str:
    """``30 d`` (a dash for none)."""
    return f"{days:g} d" if days else DASH


class PoliciesTableModel(RowTableModel[PolicyRow]):
    """Rotation policies, keyed by id."""

    HEADERS = ("Name", "Selects", "Every", "Notice", "Rotator", "Vaults", "Updated")

    def __init__(
        self, parent: Any = None, humanize: Callable[[str, str | None], str] | None = None
    ) -> None:
        super().__init__(None, parent)
        #: vault ids in a scope → names (the shell's name book)
        self.humanize = humanize or (lambda text, _vault: text)

    def key(self, row: PolicyRow) -> str:
        """The policy id."""
        return row.id

    def cell(self, row: PolicyRow, column: int) -> str:
        """A cell's text."""
        values = (
            row.name,
            row.selector_text or DASH,
            days_text(row.interval_days),
            days_text(row.notice_days),
            row.rotator,
            self.humanize(row.scope_text, None),
            stamp(row.updated_at),
        )
        return values[column]

    def tooltip(self, row: PolicyRow, column: int) -> str | None:
        """The id on the name; long selectors in full."""
        return f"{row.name} ({row.id})" if column == NAME else self.cell(row, column)

    def sort_value(self, row: PolicyRow, column: int) -> Any:
        """Numbers for the day columns, times for Updated, lowercase text otherwise."""
        if column == EVERY:
            return row.interval_days
        if column == NOTICE:
            return row.notice_days
        if column == UPDATED:
            return row.updated_at.timestamp() if row.updated_at else 0.0
        return self.cell(row, column).lower()
