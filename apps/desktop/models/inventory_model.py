"""One vault's secrets (metadata only): name, labels, version, rotation."""

from __future__ import annotations

from typing import Any

from apps.core.forms import labels_text
from apps.core.rules import due_tone
from apps.core.timefmt import day
from apps.core.viewmodels.vault_detail import InventoryRow
from apps.desktop import theme
from apps.desktop.models import DASH, RowTableModel, stamp

NAME, LABELS, VERSION, ROTATION, NEXT_DUE, UPDATED = range(6)


class InventoryTableModel(RowTableModel[InventoryRow]):
    """Secrets of one vault; sealed names muted, overdue rotation red."""

    HEADERS = ("Name", "Labels", "Version", "Rotation", "Next due", "Updated")

    def key(self, row: InventoryRow) -> str:
        """The secret id."""
        return row.secret_id

    def cell(self, row: InventoryRow, column: int) -> str:
        """The text of one cell."""
        if column == NAME:
            return row.name + (" (deleted)" if row.deleted else "")
        if column == LABELS:
            return labels_text(row.labels) or DASH
        if column == VERSION:
            return str(row.version)
        if column == ROTATION:
            return row.rotation_state or ("no policy" if row.policy_id is None else DASH)
        if column == NEXT_DUE:
            return day(row.next_due_at)
        return stamp(row.updated_at)

    def foreground(self, row: InventoryRow, column: int) -> Any:
        """Muted when sealed or deleted; red when the rotation is overdue or failed."""
        if column == NAME and (row.sealed or row.deleted):
            return theme.status_color("muted")
        if column == ROTATION and row.rotation_state in ("failed", "overdue"):
            return theme.status_color("critical")
        if column == NEXT_DUE:
            level = due_tone(row.next_due_at, self.clock())
            return theme.status_color(level) if level else None
        return None

    def tooltip(self, row: InventoryRow, column: int) -> str | None:
        """Why a name is sealed; the secret id."""
        if column == NAME:
            if row.sealed:
                return "This name cannot be opened: no metadata key on this computer."
            return row.secret_id
        return None
