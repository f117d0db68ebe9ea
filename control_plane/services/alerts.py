"""The alert engine: raise (deduped by key), acknowledge, resolve; webhook for new alerts.

An alert's ``open_key`` equals its dedupe key while it is open or acknowledged and becomes
NULL when it is resolved; a unique constraint on ``(org_id, open_key)`` makes "raise" atomic
across replicas: a second raise of a live key finds the existing alert instead of a new one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

import aiohttp
import sqlalchemy as sa
from multidict import CIMultiDict

from common import events, webhooks
from common.errors import ConflictError, NotFoundError, ValidationError
from control_plane import schema as t
from control_plane.db import autocommit, iso, new_id
from control_plane.services.principal import Principal

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from common.events import EventSink
    from control_plane.background import Clock, Spawn
    from control_plane.metrics import Metrics
    from control_plane.settings import ControlPlaneSettings

log = logging.getLogger("keyvault.control_plane.alerts")
KINDS = (
    "vault_offline",
    "rotation_overdue",
    "rotation_failed",
    "certificate_expiring",
    "integrity_failure",
    "audit_failure",
    "intent_refused",
    "template_failed",
)
SEVERITIES = ("info", "warning", "critical")
STATES = ("open", "acknowledged", "resolved")
SIGNATURE_HEADER = "X-KeyVault-Signature"


def alert_json(row: Any) -> dict[str, Any]:
    """An alert as the API and the stream show it."""
    return {
        "id": row.id,
        "key": row.dedupe_key,
        "kind": row.kind,
        "severity": row.severity,
        "vault_id": row.vault_id,
        "message": row.message,
        "state": row.state,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "acknowledged_at": iso(row.acknowledged_at),
        "acknowledged_by": row.acknowledged_by,
        "resolved_at": iso(row.resolved_at),
        "resolved_by": row.resolved_by,
    }


def sign_body(secret: bytes, body: bytes) -> str:
    """The legacy signature value ``sha256=<hex HMAC-SHA256 of the body>`` (no timestamp, so
    replayable): still sent for one release beside the ``v1=`` one of :mod:`common.webhooks`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Alerts:
    """Raises, lists and moves alerts through open → acknowledged → resolved."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        settings: ControlPlaneSettings,
        metrics: Metrics,
        sink: EventSink,
        spawn: Spawn,
    ) -> None:
        self.engine = engine
        self.single = autocommit(engine)  # one-statement reads: one round trip each
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.sink = sink
        self.spawn = spawn

    async def _get(self, conn: Any, org_id: str, alert_id: str) -> Any:
        q = sa.select(t.alerts).where(t.alerts.c.id == alert_id, t.alerts.c.org_id == org_id)
        row = (await conn.execute(q)).first()
        if row is None:
            raise NotFoundError(f"no alert {alert_id}")
        return row

    async def raise_alert(
        self,
        org_id: str,
        kind: str,
        key: str,
        message: str,
        *,
        severity: str = "warning",
        vault_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Open an alert for ``key`` unless one is live; returns (alert, newly raised)."""
        if kind not in KINDS or severity not in SEVERITIES:
            raise ValidationError(f"unknown alert kind {kind!r} or severity {severity!r}")
        now = self.clock()
        alert_id = new_id("alr")
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    t.alerts.insert().values(
                        id=alert_id,
                        org_id=org_id,
                        dedupe_key=key,
                        kind=kind,
                        severity=severity,
                        vault_id=vault_id,
                        message=message[:500],
                        state="open",
                        open_key=key,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except sa.exc.IntegrityError:
            async with self.engine.connect() as conn:
                q = sa.select(t.alerts).where(
                    t.alerts.c.org_id == org_id, t.alerts.c.open_key == key
                )
                row = (await conn.execute(q)).first()
            if row is None:  # resolved in between: try once more
                return await self.raise_alert(
                    org_id, kind, key, message, severity=severity, vault_id=vault_id
                )
            return alert_json(row), False
        async with self.engine.connect() as conn:
            alert = alert_json(await self._get(conn, org_id, alert_id))
        self.metrics.alerts_raised += 1
        await self.sink.publish(events.make(events.ALERT_RAISED, org_id, self.clock(), alert))
        if self.settings.webhook_url:
            self.spawn(self._webhook(alert), f"webhook-{alert_id}")
        return alert, True

    async def resolve_key(self, org_id: str, key: str, by: str = "system") -> dict[str, Any] | None:
        """Resolve the live alert for ``key`` if there is one (e.g. the vault came back)."""
        async with self.single.connect() as conn:
            q = sa.select(t.alerts.c.id).where(
                t.alerts.c.org_id == org_id, t.alerts.c.open_key == key
            )
            row = (await conn.execute(q)).first()
        if row is None:
            return None
        try:
            return await self._move(org_id, row.id, "resolved", by)
        except (ConflictError, NotFoundError):
            return None

    async def acknowledge(self, who: Principal, alert_id: str) -> dict[str, Any]:
        """open → acknowledged."""
        return await self._move(who.org_id, alert_id, "acknowledged", who.user_id)

    async def resolve(self, who: Principal, alert_id: str) -> dict[str, Any]:
        """open/acknowledged → resolved."""
        return await self._move(who.org_id, alert_id, "resolved", who.user_id)

    async def _move(self, org_id: str, alert_id: str, state: str, by: str) -> dict[str, Any]:
        now = self.clock()
        allowed_from = ["open"] if state == "acknowledged" else ["open", "acknowledged"]
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if state == "acknowledged":
            values.update(acknowledged_at=now, acknowledged_by=by)
        else:
            values.update(resolved_at=now, resolved_by=by, open_key=None)
        async with self.engine.begin() as conn:
            current = await self._get(conn, org_id, alert_id)
            result = await conn.execute(
                t.alerts.update()
                .where(t.alerts.c.id == alert_id, t.alerts.c.state.in_(allowed_from))
                .values(**values)
            )
            if result.rowcount != 1:
                raise ConflictError(
                    f"alert {alert_id} is {current.state}; it cannot become {state}"
                )
            alert = alert_json(await self._get(conn, org_id, alert_id))
        await self.sink.publish(events.make(events.ALERT_MOVED[state], org_id, self.clock(), alert))
        return alert

    async def list(
        self, org_id: str, *, state: str | None, after: str | None, limit: int
    ) -> dict[str, Any]:
        """Alerts of one organisation, keyset-paginated by id; optionally one state."""
        q = sa.select(t.alerts).where(t.alerts.c.org_id == org_id)
        if state is not None:
            if state not in STATES:
                raise ValidationError(f"state must be one of {', '.join(STATES)}")
            q = q.where(t.alerts.c.state == state)
        if after:
            q = q.where(t.alerts.c.id > after)
        q = q.order_by(t.alerts.c.id).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(q))
        page = rows[:limit]
        return {
            "items": [alert_json(r) for r in page],
            "next_cursor": page[-1].id if len(rows) > limit else None,
        }

    async def _webhook(self, alert: dict[str, Any]) -> None:
        """POST a Slack-compatible message, signed as :mod:`common.webhooks` describes
        (timestamp + ``v1=`` HMAC); the legacy ``sha256=`` value comes first in the same
        header for one release, so receivers that read one value keep working."""
        url = self.settings.webhook_url
        assert url is not None
        body = json.dumps(
            {
                "text": f"[{alert['severity']}] {alert['message']}",
                "alert": {k: alert[k] for k in ("id", "kind", "key", "vault_id", "state")},
            }
        ).encode()
        headers: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})
        secret = self.settings.webhook_secret
        if secret is not None:
            key = secret.get_secret_value().encode()
            headers.add(SIGNATURE_HEADER, sign_body(key, body))
            for name, value in webhooks.sign(key, body).items():
                headers.add(name, value)
        try:
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.post(url, data=body, headers=headers) as resp:
                    if resp.status >= 300:
                        log.warning("alert webhook answered %s", resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("alert webhook failed: %s", type(exc).__name__)
