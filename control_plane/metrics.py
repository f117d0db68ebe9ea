"""Prometheus metrics of the control plane."""

from __future__ import annotations

from common.metrics import RequestMetrics


class Metrics(RequestMetrics):
    """Requests by route, plus events published, alerts raised and sweeps run."""

    PREFIX = "keyvault_cp"
    COUNTERS = ("events_published", "alerts_raised", "sweeps")
    events_published: int
    alerts_raised: int
    sweeps: int
