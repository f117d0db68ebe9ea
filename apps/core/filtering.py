"""The one text filter of every operator table: case-insensitive substring over a haystack.

Every view model that has a filter box keeps its ``visible`` rows with :func:`matching`, so the
TUI and the desktop app show the same rows for the same text (neither filters on its own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

R = TypeVar("R")


def needle_of(text: str) -> str:
    """What a filter box's text searches for: trimmed and lower-cased ("" = everything)."""
    return text.strip().lower()


def matching(rows: Sequence[R], text: str, haystack: Callable[[R], str]) -> tuple[R, ...]:
    """The rows whose ``haystack(row)`` (lower-cased text) contains ``text``, in order."""
    needle = needle_of(text)
    if not needle:
        return tuple(rows)
    return tuple(r for r in rows if needle in haystack(r))
