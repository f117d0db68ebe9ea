"""Reconnect delays: exponential backoff with full jitter, reset after a long-lived connection."""

from __future__ import annotations

import random
from collections.abc import Callable

RESET_AFTER = 30.0  # seconds a connection must live before the next failure starts over


class Backoff:
    """``sleep = uniform(0, min(cap, base * 2**attempt))`` (AWS's "full jitter")."""

    def __init__(
        self, base: float, cap: float, *, uniform: Callable[[float, float], float] = random.uniform
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._uniform = uniform

    def bound(self) -> float:
        """The upper bound of the next delay."""
        return min(self.cap, self.base * 2 ** min(self.attempt, 62))

    def next_delay(self) -> float:
        """The next delay (and count the attempt)."""
        delay = self._uniform(0.0, self.bound())
        self.attempt += 1
        return delay

    def connected_for(self, seconds: float) -> None:
        """Report how long the last connection lived; resets the attempts if long enough."""
        if seconds >= RESET_AFTER:
            self.reset()

    def reset(self) -> None:
        """Start over from ``base``."""
        self.attempt = 0
