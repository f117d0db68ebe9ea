"""Reconnect backoff: exponential bounds with full jitter, capped, reset after a long connection."""

from __future__ import annotations

import random

import pytest

from agent.uplink.backoff import RESET_AFTER, Backoff


def test_bounds_double_up_to_the_cap() -> None:
    b = Backoff(0.5, 60, uniform=lambda _lo, hi: hi)
    assert [b.next_delay() for _ in range(10)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_full_jitter_stays_within_zero_and_the_bound() -> None:
    rng = random.Random(7)
    b = Backoff(0.5, 8, uniform=rng.uniform)
    for attempt in range(200):
        bound = min(8, 0.5 * 2**attempt)
        delay = b.next_delay()
        assert 0 <= delay <= bound
    delays = [Backoff(1, 1).next_delay() for _ in range(200)]
    assert min(delays) < 0.2 and max(delays) > 0.8  # really jittered, not a fixed delay


def test_a_long_connection_resets_the_attempts_and_a_short_one_does_not() -> None:
    b = Backoff(0.5, 60)
    for _ in range(5):
        b.next_delay()
    b.connected_for(RESET_AFTER - 1)
    assert b.attempt == 5
    b.connected_for(RESET_AFTER)
    assert b.attempt == 0 and b.bound() == 0.5


def test_huge_attempt_counts_do_not_overflow() -> None:
    b = Backoff(0.5, 60)
    b.attempt = 10_000
    assert b.bound() == 60


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (2, 1), (-1, 5)])
def test_nonsense_is_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(base, cap)
