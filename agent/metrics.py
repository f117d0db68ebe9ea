"""Prometheus metrics of the agent, rendered in the text exposition format without a library."""

from __future__ import annotations

import bisect
from collections import defaultdict

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Request counters and latency histograms per route, plus gauges filled at scrape time."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self._hist: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self._sum: dict[str, float] = defaultdict(float)
        self.audit_failures = 0
        self.integrity_failures = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one request."""
        self.requests[(route, status)] += 1
        self._hist[route][bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sum[route] += seconds

    def render(self, gauges: dict[str, float]) -> str:
        """The exposition text."""
        out = [
            "# HELP keyvault_requests_total API requests by route and status.",
            "# TYPE keyvault_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            out.append(f'keyvault_requests_total{{route="{route}",status="{status}"}} {n}')
        out += [
            "# HELP keyvault_request_seconds API request latency.",
            "# TYPE keyvault_request_seconds histogram",
        ]
        for route, counts in sorted(self._hist.items()):
            acc = 0
            for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                acc += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f'keyvault_request_seconds_bucket{{route="{route}",le="{le}"}} {acc}')
            out.append(f'keyvault_request_seconds_sum{{route="{route}"}} {self._sum[route]:.6f}')
            out.append(f'keyvault_request_seconds_count{{route="{route}"}} {acc}')
        counters = {
            "keyvault_audit_failures_total": self.audit_failures,
            "keyvault_integrity_failures_total": self.integrity_failures,
        }
        for name, value in counters.items():
            out += [f"# TYPE {name} counter", f"{name} {value}"]
        for gauge, level in sorted(gauges.items()):
            out += [f"# TYPE {gauge} gauge", f"{gauge} {level:g}"]
        return "\n".join(out) + "\n"
