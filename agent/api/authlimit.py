"""Failed authentication, audited at a bounded rate: the first few per source in full, the rest
counted and written as one summary entry per source and window.

Every request with a bad token used to write a full audit entry (~320 bytes): a client looping on
a wrong token could fill the disk. Now each remote address gets ``burst`` full entries per
``window`` seconds; further failures in that window are only counted, and the count is written
as one ``auth.failed.summary`` entry when the window closes (at the next failure from anyone
after it, or at shutdown). Nothing is lost from the record: how many, from where, and when.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

SUMMARY_OP = "auth.failed.summary"
MAX_SOURCES = 10_000  # beyond this many sources in one window, they share one bucket


@dataclass
class _Bucket:
    started: float
    audited: int = 0
    suppressed: int = 0


class FailedAuthLimiter:
    """Decides which failed authentications get a full audit entry, and summarises the rest."""

    def __init__(
        self, *, burst: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.window = window
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, remote: str | None) -> bool:
        """Whether this failure from ``remote`` gets its own audit entry (else it is counted)."""
        key = remote or "unknown"
        if key not in self._buckets and len(self._buckets) >= MAX_SOURCES:
            key = "many-sources"
        bucket = self._buckets.get(key)
        now = self._clock()
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(now)
        if bucket.audited < self.burst:
            bucket.audited += 1
            return True
        bucket.suppressed += 1
        return False

    def due(self, *, everything: bool = False) -> list[tuple[str, int]]:
        """(source, suppressed count) of every closed window (all of them at shutdown), reset."""
        now = self._clock()
        out: list[tuple[str, int]] = []
        for key, bucket in list(self._buckets.items()):
            if everything or now - bucket.started >= self.window:
                if bucket.suppressed:
                    out.append((key, bucket.suppressed))
                del self._buckets[key]
        return out
