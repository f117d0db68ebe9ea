"""Agents' event batches (the uplink's ``events`` frames): one transaction per batch.

Audit events are stored idempotently by ``(vault, id)`` and counted in usage only when new;
inventory events are state (latest wins), ``inventory_sync`` prunes the rest; command results
mark their command once; agent alerts raise deduplicated alerts; ``rotation`` events update the
inventory's rotation state and raise/resolve rotation alerts (``services/rotation.py``). Publishing and alerting happen
after the commit and are idempotent by their keys, so a redelivered batch changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from control_plane.services.audit_head import AuditHeads, Finding

if TYPE_CHECKING:
    from control_plane.runtime import ControlPlane
    from control_plane.services.uplink import VaultRef


@dataclass(frozen=True)
class AgentEvent:
    """One checked event of a batch (``data`` already normalised by the gateway)."""

    id: str
    seq: int
    kind: str
    at: datetime
    data: dict[str, Any]


class Ingest:
    """Commits agents' event batches."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.heads = AuditHeads(cp)

    def _audit_row(self, vault: VaultRef, event: AgentEvent) -> dict[str, Any]:
        data = event.data
        details = {"status": data["status"]} if data.get("status") is not None else {}
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
        ids) and, for audit events, ``head``: the vault's audit head ``(epoch, seq)`` after it."""
        cp = self.cp
        now = cp.now()
        audits = [e for e in events if e.kind == "audit"]
        audit_rows = [self._audit_row(vault, e) for e in audits]
        inventory = [(e.kind, e.data) for e in events if e.kind.startswith("inventory")]
        results = [e.data for e in events if e.kind == "command_result"]
        alerts = [e.data for e in events if e.kind == "alert"]
        destroyed = [d["secret_id"] for k, d in inventory if k == "inventory" and d["destroyed"]]
        head: tuple[int, int] | None = None
        findings: list[Finding] = []
        async with cp.engine.begin() as conn:
            if audits:
                head, findings = await self.heads.check_events(conn, vault, audits)
            new_audit = await cp.audit.store_events(conn, audit_rows)
            await cp.inventory.apply(conn, vault.id, inventory, now)
            live = await cp.inventory.live_count(conn, vault.id) if inventory else None
            rotations = await cp.rotations.apply(conn, vault.id, events, now)
            finished = [await cp.commands.finish(conn, vault.id, r, now) for r in results]
        if destroyed:
            await cp.rotations.forget(vault, destroyed)
        await cp.rotations.effects(vault, rotations)
        if inventory or any(e.kind == "rotation" for e in events):
            # metadata only (which vault, how many secrets): open operator views reload it
            changed: dict[str, Any] = {"vault_id": vault.id, "items": len(inventory)}
            if live is not None:
                changed["secrets"] = live
            await cp.publish(vault.org_id, "inventory.changed", changed)
        for command in finished:
            if command is not None:
                await cp.publish(vault.org_id, "command.result", command)
        for alert in alerts:
            kind = alert["kind"]
            await cp.alerts.raise_alert(
                vault.org_id,
                kind,
                f"{kind}:{vault.id}",
                f"vault {vault.name} ({vault.id}): {alert['message']}",
                severity="critical",
                vault_id=vault.id,
            )
        await self.heads.raise_all(vault, findings)
        duplicates = len(audit_rows) - new_audit
        cp.metrics.uplink_events_accepted += len(events) - duplicates
        cp.metrics.uplink_events_duplicate += duplicates
        result: dict[str, Any] = {"accepted": len(events) - duplicates, "duplicates": duplicates}
        if head is not None:
            result["head"] = head
        return result
