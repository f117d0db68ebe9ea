"""Each vault's audit head only moves forward: the control plane's check of agents' audit chains.

An agent's audit log is a MAC-chained file numbered from 1 within a chain *epoch* (a new epoch
starts when the agent finds its log lost and starts over). The control plane keeps, per vault,
the highest ``(epoch, seq)`` it was sent (``cp_vaults.audit_epoch``/``audit_seq``) and, per
stored entry, its chain MAC. It raises an ``audit_failure`` alert when

* a heartbeat reports a head behind that mark, or entries of an older epoch arrive
  (``audit_head:<vault>``) — e.g. the whole host restored from an older backup;
* entries of a newer epoch arrive (``audit_epoch:<vault>``) — the chain restarted;
* an entry comes again with another chain MAC than the one stored (``audit_rewritten:<vault>``)
  — the log was rewritten, or restored and written over.

An agent with ``workers: N`` ships each worker's log as its own chain (``data.chain = k``, ids
``w<k>.a…``): its head is kept per (vault, chain) in ``cp_audit_chains`` and checked the same
way, each chain on its own; its alerts' keys end in ``:w<k>`` (``audit_head:<vault>:w1``).

A plain redelivery (same ids, same MACs) stays silent. The check runs in the ingest's
transaction; the alerts are raised after its commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from control_plane import schema as t

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from control_plane.services.agent_event import AgentEvent
    from control_plane.services.alerts import Alerts
    from control_plane.services.presence import VaultRef

Head = tuple[int, int]  # (epoch, seq)


@dataclass(frozen=True)
class Finding:
    """One audit-chain problem: its alert key prefix and the operator's message."""

    key: str
    message: str
    chain: int = 0  # 0: the agent's own audit log; k: worker k's (``workers: N``)

    @property
    def alert_key(self) -> str:
        """The alert's dedup key suffix after the kind: ``<vault>`` or ``<vault>:w<k>``."""
        return "" if self.chain == 0 else f":w{self.chain}"


class AuditHeads:
    """Checks and moves vaults' audit heads; raises the alerts."""

    def __init__(self, *, engine: AsyncEngine, alerts: Alerts) -> None:
        self.engine = engine
        self.alerts = alerts

    async def check_events(
        self, conn: Any, vault: VaultRef, events: list[AgentEvent]
    ) -> tuple[Head | None, list[Finding]]:
        """Before the batch's audit rows are stored (same transaction): compare them with the
        head of their chain and the stored MACs, move the head forward; (chain 0's new head, or
        None for a batch of worker chains only, findings). Each chain is checked on its own."""
        head: Head | None = None
        findings: list[Finding] = []
        for chain in sorted({int(ev.data.get("chain") or 0) for ev in events}):
            mine = [ev for ev in events if int(ev.data.get("chain") or 0) == chain]
            moved, found = await self._check_chain(conn, vault, chain, mine)
            findings.extend(found)
            if chain == 0:
                head = moved
        return head, findings

    async def _check_chain(
        self, conn: Any, vault: VaultRef, chain: int, events: list[AgentEvent]
    ) -> tuple[Head, list[Finding]]:
        start = await _load_head(conn, vault.id, chain)
        epoch, seq = start
        findings: list[Finding] = []
        for event in events:
            e = int(event.data.get("epoch") or 1)
            if e < epoch:
                findings.append(_older_epoch(vault, e, (epoch, seq), chain))
                continue
            if e > epoch:
                findings.append(_restarted(vault, (epoch, seq), e, chain))
                epoch, seq = e, 0
            seq = max(seq, event.seq)
        current = [ev for ev in events if int(ev.data.get("epoch") or 1) == start[0]]
        resent = [ev for ev in current if ev.seq <= start[1] and ev.data.get("mac")]
        if resent:
            findings.extend(await self._rewritten(conn, vault, resent, chain))
        findings = list({f.key: f for f in reversed(findings)}.values())[::-1]  # first per key
        if (epoch, seq) != start:
            await _save_head(conn, vault.id, chain, (epoch, seq))
        return (epoch, seq), findings

    async def _rewritten(
        self, conn: Any, vault: VaultRef, resent: list[AgentEvent], chain: int = 0
    ) -> list[Finding]:
        ids = {f"{vault.id}:{ev.id}": ev for ev in resent}
        a = t.audit
        q = sa.select(a.c.event_id, a.c.chain_mac).where(a.c.event_id.in_(list(ids)))
        differ = sorted(
            ids[r.event_id].seq
            for r in await conn.execute(q)
            if r.chain_mac is not None and r.chain_mac != ids[r.event_id].data["mac"]
        )
        if not differ:
            return []
        shown = ", ".join(str(s) for s in differ[:10]) + (" …" if len(differ) > 10 else "")
        return [
            Finding(
                "audit_rewritten",
                f"vault {vault.name} ({vault.id}): audit entries {shown}{_of(chain)} were sent "
                f"again with other content than before: {_its(chain)} log was rewritten, or "
                "restored from an older copy and written over; check the host",
                chain,
            )
        ]

    def check_heartbeat(
        self, vault: VaultRef, floor: Head, head: dict[str, Any], chain: int = 0
    ) -> Finding | None:
        """A heartbeat's head of ``chain`` (``audit_head``, or one of ``audit_chains``)
        against that chain's mark: a finding if it is behind."""
        reported: Head = (int(head.get("epoch") or 1), int(head["seq"]))
        if reported >= floor:
            return None
        if reported[0] < floor[0]:
            return _older_epoch(vault, reported[0], floor, chain)
        return Finding(
            "audit_head",
            f"vault {vault.name} ({vault.id}): {_its(chain)} head moved backwards from entry "
            f"{floor[1]} to entry {reported[1]} (epoch {reported[0]}): the host, or its "
            "database and audit log, were restored from an older copy",
            chain,
        )

    def restarted(self, vault: VaultRef, floor: Head, epoch: int, chain: int = 0) -> Finding:
        """The finding for a chain that restarted at ``epoch`` after ``floor``."""
        return _restarted(vault, floor, epoch, chain)

    async def chain_heads(self, vault_id: str) -> dict[int, Head]:
        """The stored head of each of the vault's worker chains (``cp_audit_chains``)."""
        c = t.audit_chains
        q = sa.select(c.c.chain, c.c.audit_epoch, c.c.audit_seq).where(c.c.vault_id == vault_id)
        async with self.engine.connect() as conn:
            return {
                int(r.chain): (int(r.audit_epoch), int(r.audit_seq)) for r in await conn.execute(q)
            }

    async def raise_all(self, vault: VaultRef, findings: list[Finding]) -> None:
        """Raise each finding as a (deduplicated) critical ``audit_failure`` alert."""
        for finding in findings:
            await self.alerts.raise_alert(
                vault.org_id,
                "audit_failure",
                f"{finding.key}:{vault.id}{finding.alert_key}",
                finding.message,
                severity="critical",
                vault_id=vault.id,
            )


def _its(chain: int) -> str:
    """Who wrote the chain, for messages: chain 0 reads as it always did."""
    return "its audit" if chain == 0 else f"its worker {chain}'s audit"


def _of(chain: int) -> str:
    return "" if chain == 0 else f" of worker {chain}'s audit chain (w{chain})"


def _older_epoch(vault: VaultRef, epoch: int, head: Head, chain: int = 0) -> Finding:
    return Finding(
        "audit_head",
        f"vault {vault.name} ({vault.id}): {_its(chain)} head moved backwards: entries of chain "
        f"epoch {epoch} arrived after epoch {head[0]} (entry {head[1]}); the host was restored "
        "from an older copy",
        chain,
    )


def _restarted(vault: VaultRef, head: Head, epoch: int, chain: int = 0) -> Finding:
    return Finding(
        "audit_epoch",
        f"vault {vault.name} ({vault.id}): {_its(chain)} chain restarted (epoch {head[0]} at "
        f"entry {head[1]} → epoch {epoch}): the agent found {_its(chain)} log missing, cut or "
        "rolled back and started a new one; the old entries up to here are kept here",
        chain,
    )


async def _load_head(conn: Any, vault_id: str, chain: int) -> Head:
    """The chain's stored head: chain 0 in ``cp_vaults``, worker chains in
    ``cp_audit_chains`` (a chain never seen starts at epoch 1, entry 0)."""
    if chain == 0:
        v = t.vaults
        q = sa.select(v.c.audit_epoch, v.c.audit_seq).where(v.c.id == vault_id)
        row = (await conn.execute(q)).one()
        return int(row.audit_epoch), int(row.audit_seq)
    c = t.audit_chains
    q = sa.select(c.c.audit_epoch, c.c.audit_seq).where(
        c.c.vault_id == vault_id, c.c.chain == chain
    )
    found = (await conn.execute(q)).one_or_none()
    return (1, 0) if found is None else (int(found.audit_epoch), int(found.audit_seq))


async def _save_head(conn: Any, vault_id: str, chain: int, head: Head) -> None:
    epoch, seq = head
    if chain == 0:
        v = t.vaults
        await conn.execute(
            v.update().where(v.c.id == vault_id).values(audit_epoch=epoch, audit_seq=seq)
        )
        return
    c = t.audit_chains
    done = await conn.execute(
        c.update()
        .where(c.c.vault_id == vault_id, c.c.chain == chain)
        .values(audit_epoch=epoch, audit_seq=seq)
    )
    if done.rowcount == 0:
        await conn.execute(
            c.insert().values(vault_id=vault_id, chain=chain, audit_epoch=epoch, audit_seq=seq)
        )
