"""Copy-without-reveal: the rule and the clipboard clearing policy both UIs follow.

The rule: copying a secret's value puts it on the clipboard and nowhere else — not on screen,
not in a notification, not in a view model's state (``AgentSecretsViewModel.value_to_copy``).
The policy: the clipboard is cleared :data:`CLEAR_AFTER_SECONDS` later, but only if it still
holds what was put there (a person who copied something else meanwhile keeps it). Each UI owns
its toolkit's clipboard and timer and asks a :class:`CopyGuard` what to do.
"""

from __future__ import annotations

CLEAR_AFTER_SECONDS = 30.0


class CopyGuard:
    """Remembers what was copied, and says when the clipboard may be cleared."""

    def __init__(self, clear_after: float = CLEAR_AFTER_SECONDS) -> None:
        self.clear_after = clear_after
        self._placed: str | None = None

    def __repr__(self) -> str:
        return f"CopyGuard(pending={self.pending})"  # never the text

    def placed(self, text: str) -> None:
        """``text`` was just put on the clipboard (a later copy replaces an earlier one)."""
        self._placed = text

    def should_clear(self, current: str | None) -> bool:
        """Time is up: True when the clipboard (``current``) still holds our text.

        Either way nothing is pending afterwards.
        """
        placed, self._placed = self._placed, None
        return placed is not None and current == placed

    @property
    def pending(self) -> bool:
        """A copied text is waiting to be cleared."""
        return self._placed is not None


def copied_message(name: str, clear_after: float = CLEAR_AFTER_SECONDS) -> str:
    """What a UI tells the person after a copy (never the value)."""
    return f"copied the value of {name} (cleared in {clear_after:g} s)"
