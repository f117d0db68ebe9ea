"""Prometheus metrics of the control plane."""

from __future__ import annotations

import bisect

from common.metrics import BUCKETS, RequestMetrics


class Metrics(RequestMetrics):
    """Requests by route, plus events published, alerts raised, sweeps run, and the uplink:
    agent events accepted/duplicate, frames refused, and heartbeat handling latency."""

    PREFIX = "keyvault_cp"
    COUNTERS = (
        "events_published",
        "alerts_raised",
        "sweeps",
        "uplink_events_accepted",
        "uplink_events_duplicate",
        "uplink_frames_refused",
    )
    events_published: int
    alerts_raised: int
    sweeps: int
    uplink_events_accepted: int
    uplink_events_duplicate: int
    uplink_frames_refused: int

    def __init__(self) -> None:
        super().__init__()
        self._heartbeat = [0] * (len(BUCKETS) + 1)
        self._heartbeat_sum = 0.0

    def observe_heartbeat(self, seconds: float) -> None:
        """Count one handled heartbeat and how long recording it took."""
        self._heartbeat[bisect.bisect_left(BUCKETS, seconds)] += 1
        self._heartbeat_sum += seconds

    def render(self, gauges: dict[str, float]) -> str:
        """The exposition text, with the heartbeat latency histogram."""
        name = f"{self.PREFIX}_uplink_heartbeat_seconds"
        out = [f"# HELP {name} Time to record one agent heartbeat.", f"# TYPE {name} histogram"]
        acc = 0
        for bound, n in zip((*BUCKETS, float("inf")), self._heartbeat, strict=True):
            acc += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {acc}')
        out += [f"{name}_sum {self._heartbeat_sum:.6f}", f"{name}_count {acc}"]
        return super().render(gauges) + "\n".join(out) + "\n"
