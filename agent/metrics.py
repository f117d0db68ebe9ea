"""Prometheus metrics of the agent."""

from __future__ import annotations

from common.metrics import RequestMetrics


class Metrics(RequestMetrics):
    """Requests by route, plus audit and integrity failures."""

    PREFIX = "keyvault"
    COUNTERS = ("audit_failures", "integrity_failures")
    audit_failures: int
    integrity_failures: int
