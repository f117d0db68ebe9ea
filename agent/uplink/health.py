"""The heartbeat's health document, and alerts raised from the agent's failure counters."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agent.assembly import Agent
from agent.audit.reader import last_entry
from agent.store.db import sqlite_path
from agent.store.sql import Connection
from agent.uplink import outbox
from agent.uplink.chains import Chain, chain_epoch
from common.errors import KeyVaultError

ALERT_EVERY = 300.0  # seconds: at most one alert of each kind in this time
DEGRADED_FOR = 900.0  # seconds a failure keeps the status "degraded"
ALERT_TEXTS = {  # fixed texts: never a name, never a value
    "integrity_failure": "stored data failed its integrity check on the agent",
    "audit_failure": "the agent could not write its audit log and refused requests",
}


def policies_version(policies: list[Any]) -> str:
    """``sha256`` of the canonical JSON of a policy list."""
    raw = json.dumps(policies, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()


def _counts(conn: Connection) -> dict[str, int]:
    def count(sql: str) -> int:
        return int(conn.execute(sql).scalar_one())

    return {
        "secrets": count("SELECT count(*) FROM kv_secrets WHERE deleted_at IS NULL"),
        "versions": count("SELECT count(*) FROM kv_versions"),
        "tokens": count("SELECT count(*) FROM kv_tokens WHERE revoked_at IS NULL"),
    }


def _pg_size(conn: Connection) -> int:
    return int(conn.execute("SELECT pg_database_size(current_database())").scalar_one())


def storage_bytes(agent: Agent) -> int:
    """Bytes the store takes on SQLite (database + WAL), 0 when unknown (see :func:`document`)."""
    path = sqlite_path(agent.store.url)
    if path is None:
        return 0
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except OSError:
            pass
    return total


class FailureWatch:
    """Turns increases of the metrics' failure counters into (rate-limited) alerts."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._seen = self._counters()
        self._last_alert: dict[str, float] = {}
        self._last_failure = float("-inf")

    def _counters(self) -> dict[str, int]:
        m = self.agent.metrics
        return {"integrity_failure": m.integrity_failures, "audit_failure": m.audit_failures}

    def new_alerts(self) -> list[dict[str, str]]:
        """The alerts to queue now (each kind at most once per :data:`ALERT_EVERY`)."""
        now = time.monotonic()
        out = []
        counters = self._counters()
        for kind, value in counters.items():
            if value <= self._seen[kind]:
                continue
            self._last_failure = now
            if now - self._last_alert.get(kind, float("-inf")) >= ALERT_EVERY:
                self._last_alert[kind] = now
                out.append({"kind": kind, "message": ALERT_TEXTS[kind]})
        self._seen = counters
        return out

    async def queue_alerts(self, now: str) -> int:
        """Put new alerts in the outbox; returns how many."""
        alerts = self.new_alerts()
        if alerts:

            def txn(conn: Connection) -> None:
                for alert in alerts:
                    outbox.enqueue(conn, outbox.ALERT, alert, now)

            await self.agent.store.write(txn)
        return len(alerts)

    @property
    def degraded(self) -> bool:
        """Whether a failure happened recently."""
        return time.monotonic() - self._last_failure < DEGRADED_FOR


async def document(
    agent: Agent,
    *,
    status: str,
    outbox_depth: int,
    certificate_not_after: datetime | None,
    policies_version: str,
    chains: Sequence[Chain] = (),
) -> dict[str, Any]:
    """The ``health`` object of a heartbeat; with ``chains`` (the other workers' audit logs,
    ``workers: N``, to a control plane that stores them) each one's head as well."""
    pg = agent.store.backend == "postgresql"
    key = agent.audit_guard.key

    def q(conn: Connection) -> tuple[dict[str, int], int, dict[int, int]]:
        epochs = {}
        for chain in chains:
            try:
                epoch = chain_epoch(conn, key, chain.replica)
            except KeyVaultError:  # the uplink's shipping reports it; no guess here
                continue
            if epoch is not None:
                epochs[chain.number] = epoch
        return _counts(conn), _pg_size(conn) if pg else 0, epochs

    counts, size, epochs = await agent.store.read(q)
    # Read after the last await: every entry already shipped is at or below these heads, so a
    # head reported here is never behind what the control plane holds unless the log went back.
    seq, mac = agent.audit.head
    heads = _chain_heads(chains, epochs)
    doc = {
        "status": status,
        "version": agent.version,
        "uptime_seconds": round(agent.uptime, 3),
        "counts": counts,
        "storage_bytes": size if pg else storage_bytes(agent),
        "outbox_depth": outbox_depth,
        "certificate_not_after": certificate_not_after.isoformat()
        if certificate_not_after
        else None,
        "audit_head": {"seq": seq, "mac": mac, "epoch": agent.audit_guard.state.epoch}
        if seq
        else None,
        "integrity_failures": agent.metrics.integrity_failures,
        "audit_failures": agent.metrics.audit_failures,
        "policies_version": policies_version,
    }
    if heads:
        doc["audit_chains"] = heads
    return doc


def _chain_heads(chains: Sequence[Chain], epochs: dict[int, int]) -> list[dict[str, Any]]:
    """Each worker chain's last entry with its epoch (chains not started or unreadable left
    out: the uplink's shipping names what is wrong with them)."""
    heads = []
    for chain in chains:
        if chain.number not in epochs:
            continue
        try:
            last = last_entry(chain.folder)
        except KeyVaultError:
            continue
        if last is not None:
            seq, mac = last
            heads.append(
                {"chain": chain.number, "seq": seq, "mac": mac, "epoch": epochs[chain.number]}
            )
    return heads
