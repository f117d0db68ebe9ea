"""Copy a secret to the terminal's clipboard and clear it later, by the core's policy.

Textual copies with OSC 52 and cannot read the terminal's clipboard back; what the app itself
copied last (``App.clipboard``) is what the guard compares with, so a later copy made in the
app is never wiped by an earlier timer.
"""

from __future__ import annotations

from typing import Any

from apps.core.clipboard import CLEAR_AFTER_SECONDS, CopyGuard


class TerminalClipboard:
    """One per app: copies, then clears after the delay if the app's clipboard is unchanged."""

    def __init__(self, app: Any, clear_after: float = CLEAR_AFTER_SECONDS) -> None:
        self.app = app
        self.guard = CopyGuard(clear_after)
        self._timer: Any = None

    def __repr__(self) -> str:
        return f"TerminalClipboard(pending={self.guard.pending})"  # never the text

    def copy(self, text: str) -> None:
        """Put ``text`` on the clipboard and (re)start the clear timer."""
        self.app.copy_to_clipboard(text)
        self.guard.placed(text)
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.app.set_timer(self.guard.clear_after, self.clear_if_unchanged)

    def clear_if_unchanged(self) -> bool:
        """Clear the clipboard if it still holds our text; True if it was cleared."""
        self._timer = None
        if not self.guard.should_clear(self.app.clipboard):
            return False
        self.app.copy_to_clipboard("")
        return True


def terminal_clipboard(app: Any) -> TerminalClipboard:
    """The app's clipboard helper (made on first use)."""
    helper = getattr(app, "_kv_clipboard", None)
    if not isinstance(helper, TerminalClipboard):
        helper = TerminalClipboard(app)
        app._kv_clipboard = helper
    return helper
