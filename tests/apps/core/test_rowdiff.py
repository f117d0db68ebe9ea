"""Row diffing: which rows to update, insert or remove between two row lists."""

from __future__ import annotations

from dataclasses import dataclass, replace

from apps.core.rowdiff import diff_rows


@dataclass(frozen=True)
class Row:
    id: str
    value: int = 0


A, B, C, D = Row("a"), Row("b"), Row("c"), Row("d")


def test_the_same_rows_are_unchanged() -> None:
    diff = diff_rows((A, B, C), (A, B, C))
    assert diff.unchanged and diff.in_place and diff.updated == ()
    assert diff_rows((), ()).unchanged


def test_equal_new_objects_are_not_updates() -> None:
    assert diff_rows((A, B), (Row("a"), Row("b"))).unchanged


def test_a_changed_row_is_an_update_at_its_index() -> None:
    b2 = replace(B, value=7)
    diff = diff_rows((A, B, C), (A, b2, C))
    assert diff.in_place and not diff.unchanged
    assert diff.updated == ((1, b2),) and diff.inserted == () and diff.removed == ()


def test_inserted_and_removed_rows() -> None:
    diff = diff_rows((A, B, C), (A, C, D))
    assert not diff.in_place
    assert diff.inserted == ((2, D),) and diff.removed == ("b",)
    assert not diff.reordered and diff.updated == ()


def test_a_new_order_is_a_reorder_with_updates_by_new_index() -> None:
    c2 = replace(C, value=1)
    diff = diff_rows((A, B, C), (c2, B, A))
    assert diff.reordered and not diff.in_place
    assert diff.updated == ((0, c2),) and diff.inserted == () and diff.removed == ()


def test_rows_from_empty_are_all_inserted_and_to_empty_all_removed() -> None:
    assert diff_rows((), (A, B)).inserted == ((0, A), (1, B))
    assert diff_rows((A, B), ()).removed == ("a", "b")


def test_a_custom_key() -> None:
    diff = diff_rows((A,), (Row("a", 2),), key=lambda r: f"{r.id}{r.value}")
    assert diff.removed == ("a0",) and diff.inserted == ((0, Row("a", 2)),)
