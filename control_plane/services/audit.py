"""The central audit log of metadata, and usage analytics from agents' event metadata."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from common.errors import NotFoundError, ValidationError
from control_plane import schema as t
from control_plane.db import autocommit, aware, insert_for, iso

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from control_plane.background import Clock

_TOKEN = re.compile(r"^[A-Za-z0-9_.:\-]{1,80}$")
OUTCOMES = ("ok", "denied", "error", "attempt")


def _short(value: Any, field: str, limit: int = 80, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not _TOKEN.match(value) or len(value) > limit:
        raise ValidationError(f"{field} must be 1-{limit} characters of A-Z a-z 0-9 _ . : -")
    return value


def _when(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{field} must be an ISO 8601 time") from None
    result = aware(moment)
    assert result is not None
    return result


def audit_json(row: Any) -> dict[str, Any]:
    """One audit entry as the API shows it."""
    return {
        "seq": row.seq,
        "event_id": row.event_id,
        "at": iso(row.at),
        "source": row.source,
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "outcome": row.outcome,
        "details": json.loads(row.details),
    }


class Audit:
    """Writes and queries the metadata audit log; counts usage per day, vault and operation."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
    ) -> None:
        self.engine = engine
        self.single = autocommit(engine)  # one INSERT is its own transaction: one round trip
        self.clock = clock

    async def record(
        self,
        org_id: str,
        action: str,
        *,
        actor: str | None,
        target: str | None = None,
        outcome: str = "ok",
        details: dict[str, Any] | None = None,
        source: str = "control_plane",
    ) -> None:
        """Append one control-plane action (metadata only): one INSERT, committed durably when
        it returns (in autocommit on PostgreSQL: no BEGIN and COMMIT round trips around it)."""
        async with self.single.begin() as conn:
            await conn.execute(
                t.audit.insert().values(
                    org_id=org_id,
                    at=self.clock(),
                    source=source,
                    actor=actor,
                    action=action,
                    target=target,
                    outcome=outcome,
                    details=json.dumps(details or {}),
                )
            )

    async def ingest(self, vault_id: str, events: list[dict[str, Any]]) -> dict[str, int]:
        """Take a batch of an agent's audit-event metadata; idempotent by ``event_id``.

        Each event: ``{event_id, op, outcome, at, actor?, secret_id?}``. A repeated event id is
        skipped, so usage is never counted twice.
        """
        async with self.engine.connect() as conn:
            vault = (
                await conn.execute(sa.select(t.vaults.c.org_id).where(t.vaults.c.id == vault_id))
            ).first()
        if vault is None:
            raise NotFoundError(f"no vault {vault_id}")
        rows = [self._event_row(vault.org_id, vault_id, e) for e in events]
        async with self.engine.begin() as conn:
            accepted = await self.store_events(conn, rows)
        return {"accepted": accepted, "duplicates": len(rows) - accepted}

    async def store_events(self, conn: Any, rows: list[dict[str, Any]]) -> int:
        """Insert audit rows of agents' events in the caller's transaction; returns how many
        were new. One ``INSERT … ON CONFLICT DO NOTHING`` skips known ids, and one upsert counts
        usage for the new ones only."""
        seen: set[str] = set()
        unique = []
        for row in rows:
            if row["event_id"] not in seen:
                seen.add(row["event_id"])
                unique.append(row)
        if not unique:
            return 0
        stmt = (
            insert_for(self.engine, t.audit)
            .values(unique)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(t.audit.c.org_id, t.audit.c.source, t.audit.c.at, t.audit.c.action)
        )
        new = list(await conn.execute(stmt))
        counts = Counter((r.org_id, r.source, _day_of(r.at), r.action) for r in new)
        if counts:
            ins = insert_for(self.engine, t.usage).values(
                [
                    {"org_id": o, "vault_id": v, "day": d, "operation": op, "count": n}
                    for (o, v, d, op), n in sorted(counts.items())
                ]
            )
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=["org_id", "vault_id", "day", "operation"],
                    set_={"count": t.usage.c.count + ins.excluded.count},
                )
            )
        return len(new)

    def _event_row(self, org_id: str, vault_id: str, event: Any) -> dict[str, Any]:
        if not isinstance(event, dict):
            raise ValidationError("each event must be an object")
        outcome = event.get("outcome", "ok")
        if outcome not in OUTCOMES:
            raise ValidationError(f"outcome must be one of {', '.join(OUTCOMES)}")
        secret_id = _short(event.get("secret_id"), "secret_id")
        return {
            "org_id": org_id,
            "event_id": f"{vault_id}:{_short(event.get('event_id'), 'event_id', 60, False)}",
            "at": _when(event.get("at"), "at"),
            "source": vault_id,
            "actor": _short(event.get("actor"), "actor"),
            "action": _short(event.get("op"), "op", 80, False),
            "target": secret_id,
            "outcome": outcome,
            "details": "{}",
        }

    async def query(
        self,
        org_id: str,
        *,
        after: int = 0,
        limit: int = 100,
        action: str | None = None,
        source: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before: int | None = None,
    ) -> dict[str, Any]:
        """Audit entries of one organisation, keyset-paginated by ``seq``: oldest first after
        ``after``, or — with ``before`` (0: from the newest) — newest first, ``next_before``."""
        newest_first = before is not None
        q = sa.select(t.audit).where(t.audit.c.org_id == org_id, t.audit.c.seq > after)
        if before:
            q = q.where(t.audit.c.seq < before)
        if action:
            q = q.where(t.audit.c.action == _short(action, "action"))
        if source:
            q = q.where(t.audit.c.source == _short(source, "source"))
        if since:
            q = q.where(t.audit.c.at >= _when(since, "since"))
        if until:
            q = q.where(t.audit.c.at < _when(until, "until"))
        order = t.audit.c.seq.desc() if newest_first else t.audit.c.seq
        q = q.order_by(order).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(q))
        page = rows[:limit]
        nxt = page[-1].seq if len(rows) > limit else None
        items = [audit_json(r) for r in page]
        if newest_first:
            return {"items": items, "next_before": nxt}
        return {"items": items, "next_after": nxt}

    async def usage(
        self, org_id: str, *, start: str | None, end: str | None, vault_id: str | None
    ) -> dict[str, Any]:
        """Counts per day, vault and operation; ``start``/``end`` are inclusive dates."""
        today = self.clock().date()
        end_day = _day(end, "to") if end else today
        start_day = _day(start, "from") if start else end_day - timedelta(days=29)
        if start_day > end_day:
            raise ValidationError("from must not be after to")
        if (end_day - start_day).days > 366:
            raise ValidationError("the range may span at most 366 days")
        q = sa.select(t.usage).where(
            t.usage.c.org_id == org_id, t.usage.c.day >= start_day, t.usage.c.day <= end_day
        )
        if vault_id:
            q = q.where(t.usage.c.vault_id == _short(vault_id, "vault_id"))
        q = q.order_by(t.usage.c.day, t.usage.c.vault_id, t.usage.c.operation)
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(q))
        return {
            "from": start_day.isoformat(),
            "to": end_day.isoformat(),
            "rows": [
                {
                    "day": r.day.isoformat(),
                    "vault_id": r.vault_id,
                    "operation": r.operation,
                    "count": r.count,
                }
                for r in rows
            ],
            "total": sum(r.count for r in rows),
        }


def _day_of(moment: datetime) -> date:
    value = aware(moment)
    assert value is not None
    return value.date()


def _day(value: str, field: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{field} must be a date (YYYY-MM-DD)") from None
