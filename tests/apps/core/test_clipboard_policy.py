"""The clipboard clearing policy both UIs follow: clear later, only if still ours."""

from __future__ import annotations

from apps.core.clipboard import CLEAR_AFTER_SECONDS, CopyGuard, copied_message


def test_cleared_when_the_clipboard_still_holds_our_text() -> None:
    assert CLEAR_AFTER_SECONDS == 30.0
    guard = CopyGuard()
    guard.placed("s3cret")
    assert guard.pending and "s3cret" not in repr(guard)
    assert guard.should_clear("s3cret") is True
    assert not guard.pending and guard.should_clear("s3cret") is False  # once only


def test_kept_when_the_person_copied_something_else_or_nothing_was_copied() -> None:
    guard = CopyGuard(0.5)
    guard.placed("s3cret")
    assert guard.should_clear("my own note") is False and not guard.pending
    assert CopyGuard().should_clear("") is False


def test_a_later_copy_replaces_an_earlier_one() -> None:
    guard = CopyGuard()
    guard.placed("one")
    guard.placed("two")
    assert guard.should_clear("one") is False


def test_the_message_names_the_secret_never_the_value() -> None:
    assert copied_message("db/pw") == "copied the value of db/pw (cleared in 30 s)"
    assert copied_message("db/pw", 0.2) == "copied the value of db/pw (cleared in 0.2 s)"
