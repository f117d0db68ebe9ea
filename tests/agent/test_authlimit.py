"""The failed-authentication audit limiter in isolation (its process-level test is in
tests/agent/test_edges_http.py)."""

from __future__ import annotations

from agent.api.authlimit import FailedAuthLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_per_source_then_counted_and_summarised_per_window() -> None:
    clock = Clock()
    limiter = FailedAuthLimiter(burst=3, window=60, clock=clock)
    admitted = [limiter.admit("10.0.0.1") for _ in range(10)]
    assert admitted == [True] * 3 + [False] * 7
    assert limiter.admit("10.0.0.2") is True  # another source has its own burst
    assert limiter.due() == []  # the window is still open
    clock.now = 61
    assert limiter.due() == [("10.0.0.1", 7)]
    assert limiter.admit("10.0.0.1") is True  # a new window


def test_everything_is_flushed_at_shutdown() -> None:
    limiter = FailedAuthLimiter(burst=1, window=60, clock=Clock())
    for _ in range(5):
        limiter.admit(None)
    assert limiter.due(everything=True) == [("unknown", 4)]
    assert limiter.due(everything=True) == []
