"""Who is calling: an authenticated operator, and the role ladder."""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import PermissionDeniedError

ROLES = ("viewer", "operator", "admin", "owner")
RANK = {role: i for i, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Principal:
    """An operator authenticated by a session token."""

    user_id: str
    org_id: str
    email: str
    role: str
    session_id: str

    def require(self, role: str) -> None:
        """Raise PermissionDeniedError unless this operator's role is at least ``role``."""
        if RANK[self.role] < RANK[role]:
            raise PermissionDeniedError(f"this needs the {role} role; you are {self.role}")
