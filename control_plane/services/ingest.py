"""Agents' event batches (the uplink's ``events`` frames): one transaction per batch.

Audit events are stored idempotently by ``(vault, id)`` and counted in usage only when new;
inventory events are state (latest wins), ``inventory_sync`` prunes the rest; command results
mark their command once; agent alerts raise deduplicated alerts; ``rotation`` events update the
inventory's rotation state and raise/resolve rotation alerts (``services/rotation.py``). Publishing and alerting happen
after the commit and are idempotent by their keys, so a redelivered batch changes nothing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from common.events import COMMAND_RESULT, INVENTORY_CHANGED, make
from control_plane.services.agent_event import AgentEvent
from control_plane.services.audit_head import AuditHeads, Finding

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from common.events import EventSink
    from control_plane.background import Clock
    from control_plane.metrics import Metrics
    from control_plane.services.alerts import Alerts
    from control_plane.services.audit import Audit
    from control_plane.services.commands import Commands
    from control_plane.services.inventory import Inventory
    from control_plane.services.presence import VaultRef
    from control_plane.services.rotation import Rotations


class Ingest:
    """Commits agents' event batches."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        metrics: Metrics,
        sink: EventSink,
        audit: Audit,
        inventory: Inventory,
        rotations: Rotations,
        commands: Commands,
        alerts: Alerts,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.metrics = metrics
        self.sink = sink
        self.audit = audit
        self.inventory = inventory
        self.rotations = rotations
        self.commands = commands
        self.alerts = alerts
        self.heads = AuditHeads(engine=engine, alerts=alerts)

    def _audit_row(self, vault: VaultRef, event: AgentEvent) -> dict[str, Any]:
        data = event.data
        details: dict[str, Any] = {}
        if data.get("status") is not None:
            details["status"] = data["status"]
        if data.get("chain"):  # a worker's log (``workers: N``): which one
            details["chain"] = data["chain"]
        return {
            "org_id": vault.org_id,
            "event_id": f"{vault.id}:{event.id}",
            "at": event.at,
            "source": vault.id,
            "actor": data.get("actor"),
            "action": data["op"],
            "target": data.get("secret_id"),
            "outcome": data["outcome"],
            "details": json.dumps(details),
            "chain_mac": data.get("mac"),
        }

    async def batch(self, vault: VaultRef, events: list[AgentEvent]) -> dict[str, Any]:
        """Commit one batch; returns ``{"accepted", "duplicates"}`` (duplicates: known audit
        ids) and, for chain 0's audit events, ``head``: the vault's audit head ``(epoch, seq)``
        after it (worker chains' heads are their own: not the one heartbeats are checked against)."""
        now = self.clock()
        audits = [e for e in events if e.kind == "audit"]
        audit_rows = [self._audit_row(vault, e) for e in audits]
        inventory = [(e.kind, e.data) for e in events if e.kind.startswith("inventory")]
        results = [e.data for e in events if e.kind == "command_result"]
        alerts = [e.data for e in events if e.kind == "alert"]
        destroyed = [d["secret_id"] for k, d in inventory if k == "inventory" and d["destroyed"]]
        head: tuple[int, int] | None = None
        findings: list[Finding] = []
        async with self.engine.begin() as conn:
            if audits:
                head, findings = await self.heads.check_events(conn, vault, audits)  # per chain
            new_audit = await self.audit.store_events(conn, audit_rows)
            await self.inventory.apply(conn, vault.id, inventory, now)
            live = await self.inventory.live_count(conn, vault.id) if inventory else None
            rotations = await self.rotations.apply(conn, vault.id, events, now)
            finished = [await self.commands.finish(conn, vault.id, r, now) for r in results]
        if destroyed:
            await self.rotations.forget(vault, destroyed)
        await self.rotations.effects(vault, rotations)
        if inventory or any(e.kind == "rotation" for e in events):
            # metadata only (which vault, how many secrets): open operator views reload it
            changed: dict[str, Any] = {"vault_id": vault.id, "items": len(inventory)}
            if live is not None:
                changed["secrets"] = live
            await self.sink.publish(make(INVENTORY_CHANGED, vault.org_id, self.clock(), changed))
        for command in finished:
            if command is not None:
                await self.sink.publish(make(COMMAND_RESULT, vault.org_id, self.clock(), command))
        for alert in alerts:
            kind = alert["kind"]
            await self.alerts.raise_alert(
                vault.org_id,
                kind,
                f"{kind}:{vault.id}",
                f"vault {vault.name} ({vault.id}): {alert['message']}",
                severity="critical",
                vault_id=vault.id,
            )
        await self.heads.raise_all(vault, findings)
        duplicates = len(audit_rows) - new_audit
        self.metrics.uplink_events_accepted += len(events) - duplicates
        self.metrics.uplink_events_duplicate += duplicates
        result: dict[str, Any] = {"accepted": len(events) - duplicates, "duplicates": duplicates}
        if head is not None:
            result["head"] = head
        return result
