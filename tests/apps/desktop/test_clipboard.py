"""Copy to the clipboard; it is cleared later only if it still holds what we put there."""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QGuiApplication

from apps.desktop.clipboard import CLEAR_AFTER_MS, ClipboardGuard


def test_cleared_after_the_delay(qtbot: Any) -> None:
    assert CLEAR_AFTER_MS == 30_000
    guard = ClipboardGuard(clear_after_ms=50)
    guard.copy("s3cret-value")
    board = QGuiApplication.clipboard()
    assert board.text() == "s3cret-value" and guard.pending
    assert "s3cret" not in repr(guard)
    qtbot.waitUntil(lambda: board.text() == "", timeout=2000)
    assert not guard.pending


def test_not_cleared_when_the_person_copied_something_else(qtbot: Any) -> None:
    guard = ClipboardGuard(clear_after_ms=50)
    guard.copy("s3cret-value")
    board = QGuiApplication.clipboard()
    board.setText("my own note")
    qtbot.wait(150)
    assert board.text() == "my own note"
    assert not guard.pending
    assert guard.clear_if_unchanged() is False  # nothing pending any more
