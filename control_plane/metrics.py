"""Prometheus metrics of the control plane, rendered as exposition text without a library."""

from __future__ import annotations

import bisect
from collections import defaultdict

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Request counters and latency histograms per route, plus counters and scrape-time gauges."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self._hist: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self._sum: dict[str, float] = defaultdict(float)
        self.events_published = 0
        self.alerts_raised = 0
        self.sweeps = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one request."""
        self.requests[(route, status)] += 1
        self._hist[route][bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sum[route] += seconds

    def render(self, gauges: dict[str, float]) -> str:
        """The exposition text."""
        out = [
            "# HELP keyvault_cp_requests_total API requests by route and status.",
            "# TYPE keyvault_cp_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            out.append(f'keyvault_cp_requests_total{{route="{route}",status="{status}"}} {n}')
        out += ["# TYPE keyvault_cp_request_seconds histogram"]
        for route, counts in sorted(self._hist.items()):
            acc = 0
            for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                acc += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f'keyvault_cp_request_seconds_bucket{{route="{route}",le="{le}"}} {acc}')
            out.append(f'keyvault_cp_request_seconds_sum{{route="{route}"}} {self._sum[route]:.6f}')
            out.append(f'keyvault_cp_request_seconds_count{{route="{route}"}} {acc}')
        counters: dict[str, float] = {
            "keyvault_cp_events_published_total": self.events_published,
            "keyvault_cp_alerts_raised_total": self.alerts_raised,
            "keyvault_cp_sweeps_total": self.sweeps,
        }
        for name, value in counters.items():
            out += [f"# TYPE {name} counter", f"{name} {value}"]
        for name, value in sorted(gauges.items()):
            out += [f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(out) + "\n"
