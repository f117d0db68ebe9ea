"""Row diffing for the UIs' tables: what changed between two row lists, by key.

A view model publishes a whole new tuple of frozen rows on every change; a table repaints only
what differs. :func:`diff_rows` says which rows were updated in place, which were inserted and
which removed, and whether the order of the rows both lists hold changed. A UI repaints single
rows when :attr:`RowDiff.in_place` holds and rebuilds its table otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Generic, TypeVar

R = TypeVar("R")
Key = Callable[[Any], str]
by_id: Key = attrgetter("id")


@dataclass(frozen=True)
class RowDiff(Generic[R]):
    """The difference between an old and a new row list.

    ``updated``: (index in the new list, row) for rows whose key stayed but whose content
    changed; ``inserted``: (index in the new list, row) for new keys; ``removed``: the keys that
    are gone; ``reordered``: the rows kept in both lists are not in the same order.
    """

    updated: tuple[tuple[int, R], ...] = ()
    inserted: tuple[tuple[int, R], ...] = ()
    removed: tuple[str, ...] = ()
    reordered: bool = False

    @property
    def in_place(self) -> bool:
        """True when repainting the updated rows is enough (same keys, same order)."""
        return not (self.inserted or self.removed or self.reordered)

    @property
    def unchanged(self) -> bool:
        """True when nothing at all differs."""
        return self.in_place and not self.updated


def _differs(before: Any, after: Any) -> bool:
    # identity first: a view model keeps the row objects it did not change
    return before is not after and before != after


def updates_in_place(
    old: Sequence[R], new: Sequence[R], key: Key = by_id
) -> list[tuple[int, R]] | None:
    """(index, row) of the rows to repaint when ``new`` holds the same keys in the same order as
    ``old``; None when rows were inserted, removed or moved (then a table rebuilds).

    Cheap on purpose: it stops at the first key that differs, so a filter keystroke over 10,000
    rows does not pay for a full diff it would throw away.
    """
    if len(old) != len(new):
        return None
    updated: list[tuple[int, R]] = []
    for index, (before, after) in enumerate(zip(old, new, strict=True)):
        if before is after:
            continue
        if key(before) != key(after):
            return None
        if before != after:
            updated.append((index, after))
    return updated


def diff_rows(old: Sequence[R], new: Sequence[R], key: Key = by_id) -> RowDiff[R]:
    """What changed from ``old`` to ``new``, rows matched by ``key`` (their ``id`` by default)."""
    updated = updates_in_place(old, new, key)
    if updated is not None:
        return RowDiff(updated=tuple(updated))
    return _full_diff(old, new, key)


def _full_diff(old: Sequence[R], new: Sequence[R], key: Key) -> RowDiff[R]:
    """The general case: keys added, removed or moved."""
    old_by_key = {key(row): row for row in old}
    new_keys = {key(row) for row in new}
    updated: list[tuple[int, R]] = []
    inserted: list[tuple[int, R]] = []
    kept_new_order: list[str] = []
    for index, row in enumerate(new):
        k = key(row)
        before = old_by_key.get(k)
        if before is None:
            inserted.append((index, row))
            continue
        kept_new_order.append(k)
        if _differs(before, row):
            updated.append((index, row))
    kept_old_order = [key(row) for row in old if key(row) in new_keys]
    removed = tuple(k for k in old_by_key if k not in new_keys)
    return RowDiff(
        updated=tuple(updated),
        inserted=tuple(inserted),
        removed=removed,
        reordered=kept_old_order != kept_new_order,
    )
