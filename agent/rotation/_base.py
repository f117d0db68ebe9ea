"""The rotator interface shared by every rotator: reason codes, the error, the secret reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

DATABASE_UNREACHABLE = "database_unreachable"
AUTHENTICATION_FAILED = "authentication_failed"
VERIFICATION_FAILED = "verification_failed"
COMMAND_FAILED = "command_failed"
COMMAND_TIMEOUT = "command_timeout"
COMMAND_NOT_CONFIGURED = "command_not_configured"
CONNECTION_NOT_CONFIGURED = "connection_not_configured"
INTERRUPTED = "interrupted"
INVALID_SETTINGS = "invalid_settings"
INTERNAL_ERROR = "internal_error"
NOT_ALLOWED = "not_allowed"  # the agent's own config forbids it (role, hook, protected name)

REASONS = frozenset(
    {
        DATABASE_UNREACHABLE,
        AUTHENTICATION_FAILED,
        VERIFICATION_FAILED,
        COMMAND_FAILED,
        COMMAND_TIMEOUT,
        COMMAND_NOT_CONFIGURED,
        CONNECTION_NOT_CONFIGURED,
        INTERRUPTED,
        INVALID_SETTINGS,
        INTERNAL_ERROR,
        NOT_ALLOWED,
    }
)


class RotationError(Exception):
    """A rotation step failed. ``reason`` is one of :data:`REASONS` and is all that goes upstream.

    ``detail`` is a short value-free explanation for the agent's own log (a setting's name, an
    SQLSTATE, an exit status); callers never put a secret value, a DSN or program output in it.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            reason = INTERNAL_ERROR
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)

    def __repr__(self) -> str:
        return f"RotationError({self.reason!r}, {self.detail!r})"


@dataclass(frozen=True)
class SecretRef:
    """The secret being rotated, never its value.

    ``version`` is the secret's current version (0 when it has none); the value being rotated
    in becomes ``version + 1``.
    """

    id: str
    name: str
    version: int


class Rotator(Protocol):
    """One kind of rotation. Every method raises :class:`RotationError` on failure."""

    def generate(self, current: str | None) -> str:
        """The new value (may depend on the current one, e.g. which user is idle)."""
        ...

    def apply(self, new: str, current: str | None) -> None:
        """Make the outside world use ``new``."""
        ...

    def verify(self, new: str) -> None:
        """Prove ``new`` works (e.g. log in with it)."""
        ...

    def revert(self, current: str | None, new: str) -> None:
        """Best-effort undo of :meth:`apply`."""
        ...
