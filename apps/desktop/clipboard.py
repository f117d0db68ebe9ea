"""Copy to the clipboard, and clear it after 30 s if it still holds what we put there.

The policy is the core's (``apps.core.clipboard``); this module only drives Qt's clipboard and
timer with it.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtGui import QClipboard, QGuiApplication

from apps.core.clipboard import CLEAR_AFTER_SECONDS, CopyGuard

CLEAR_AFTER_MS = round(CLEAR_AFTER_SECONDS * 1000)


class ClipboardGuard:
    """Copies text and wipes it later, unless the person copied something else meanwhile."""

    def __init__(self, clear_after_ms: int = CLEAR_AFTER_MS) -> None:
        self.clear_after_ms = clear_after_ms
        self._guard = CopyGuard(clear_after_ms / 1000)
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.clear_if_unchanged)

    def __repr__(self) -> str:
        return f"ClipboardGuard(pending={self.pending})"  # never the text

    @staticmethod
    def _board() -> QClipboard:
        return QGuiApplication.clipboard()

    def copy(self, text: str) -> None:
        """Put ``text`` on the clipboard and start the clear timer."""
        self._board().setText(text)
        self._guard.placed(text)
        self._timer.start(self.clear_after_ms)

    def clear_if_unchanged(self) -> bool:
        """Clear the clipboard if it still holds our text; True if it was cleared."""
        self._timer.stop()
        if not self._guard.should_clear(self._board().text()):
            return False
        self._board().clear()
        return True

    @property
    def pending(self) -> bool:
        """A copied text is waiting to be cleared."""
        return self._guard.pending


_guard: ClipboardGuard | None = None


def guard() -> ClipboardGuard:
    """The app's one clipboard guard (created on first use, after the QApplication)."""
    global _guard
    if _guard is None:
        _guard = ClipboardGuard()
    return _guard


def copy_secret(text: str) -> None:
    """Copy ``text``; it is cleared after 30 s unless replaced."""
    guard().copy(text)
