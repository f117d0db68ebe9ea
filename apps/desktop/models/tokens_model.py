"""The enrollment-tokens table: one row per token (``TokenRow``), never the token itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apps.core.viewmodels.enrollment import TokenRow
from apps.desktop import theme
from apps.desktop.models import DASH, RowTableModel, stamp

DESCRIPTION, STATE, CREATED, EXPIRES, USED, VAULT = range(6)
#: a token state → the theme's status colour it is drawn in
STATE_COLOURS = {"active": "ok", "expired": "warning", "revoked": "critical", "used": "muted"}


class TokensTableModel(RowTableModel[TokenRow]):
    """Enrollment tokens, keyed by id, in the view model's order (newest first)."""

    HEADERS = ("Description", "State", "Created", "Expires", "Used", "Vault")

    def __init__(
        self, parent: Any = None, vault_name: Callable[[str | None], str] | None = None
    ) -> None:
        super().__init__(parent=parent)
        self.vault_name = vault_name or (lambda vault_id: vault_id or "")

    def key(self, row: TokenRow) -> str:
        """The token's id."""
        return row.id

    def cell(self, row: TokenRow, column: int) -> str:
        """A cell's text."""
        values = (
            row.description or DASH,
            row.state,
            stamp(row.created_at),
            stamp(row.expires_at),
            stamp(row.used_at),
            self.vault_name(row.vault_id) or DASH,
        )
        return values[column]

    def sort_value(self, row: TokenRow, column: int) -> Any:
        """Times sort as times."""
        moments = {CREATED: row.created_at, EXPIRES: row.expires_at, USED: row.used_at}
        if column in moments:
            moment = moments[column]
            return moment.timestamp() if moment else 0.0
        return self.cell(row, column).lower()

    def foreground(self, row: TokenRow, column: int) -> Any:
        """The state in its colour."""
        return theme.status_color(STATE_COLOURS.get(row.state, "")) if column == STATE else None
