"""The users table: one row per user of the organisation (``UserRow``)."""

from __future__ import annotations

from typing import Any

from apps.core.viewmodels.users import UserRow
from apps.desktop.models import RowTableModel, stamp

EMAIL, ROLE, CREATED = range(3)


class UsersTableModel(RowTableModel[UserRow]):
    """Users, keyed by id, in the view model's order (by e-mail)."""

    HEADERS = ("E-mail", "Role", "Since")

    def key(self, row: UserRow) -> str:
        """The user's id."""
        return row.id

    def cell(self, row: UserRow, column: int) -> str:
        """A cell's text (you are marked)."""
        values = (f"{row.email} (you)" if row.you else row.email, row.role, stamp(row.created_at))
        return values[column]

    def sort_value(self, row: UserRow, column: int) -> Any:
        """Times sort as times."""
        if column == CREATED:
            return row.created_at.timestamp() if row.created_at else 0.0
        return self.cell(row, column).lower()
