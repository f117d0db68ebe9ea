"""Prometheus metrics without a library: per-route request counters and latency histograms.

Each server subclasses :class:`RequestMetrics` with its metric-name prefix and its own counters
(plain integer attributes listed in ``COUNTERS``); gauges are passed in at scrape time.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import ClassVar

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RequestMetrics:
    """Request counts and latency histograms by route; counters named in ``COUNTERS``."""

    PREFIX: ClassVar[str] = "keyvault"
    COUNTERS: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self._hist: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self._sum: dict[str, float] = defaultdict(float)
        for name in self.COUNTERS:
            setattr(self, name, 0)

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one request."""
        self.requests[(route, status)] += 1
        self._hist[route][bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sum[route] += seconds

    def render(self, gauges: dict[str, float]) -> str:
        """The exposition text."""
        p = self.PREFIX
        out = [
            f"# HELP {p}_requests_total API requests by route and status.",
            f"# TYPE {p}_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            out.append(f'{p}_requests_total{{route="{route}",status="{status}"}} {n}')
        out += [
            f"# HELP {p}_request_seconds API request latency.",
            f"# TYPE {p}_request_seconds histogram",
        ]
        for route, counts in sorted(self._hist.items()):
            acc = 0
            for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                acc += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f'{p}_request_seconds_bucket{{route="{route}",le="{le}"}} {acc}')
            out.append(f'{p}_request_seconds_sum{{route="{route}"}} {self._sum[route]:.6f}')
            out.append(f'{p}_request_seconds_count{{route="{route}"}} {acc}')
        for name in self.COUNTERS:
            out += [f"# TYPE {p}_{name}_total counter", f"{p}_{name}_total {getattr(self, name)}"]
        for gauge, level in sorted(gauges.items()):
            out += [f"# TYPE {gauge} gauge", f"{gauge} {level:g}"]
        return "\n".join(out) + "\n"
