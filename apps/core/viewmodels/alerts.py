"""Alerts: list, acknowledge, resolve, and count the open ones the operator has not looked at.

``unread`` is always derived from the alerts themselves (open, and not among those the operator
had on screen when they last marked them read), so a reload after a reconnect or a new login
gives a count that agrees with the list: never "0 unread" next to open alerts nobody has seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apps.core.viewmodels.base import Listener, ViewModel, when
from common import events
from common.cpclient import AsyncControlPlaneClient

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class AlertRow:
    """One alert as the alerts table shows it."""

    id: str
    kind: str
    severity: str
    state: str
    message: str
    vault_id: str | None
    raised_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AlertRow:
        """A row from the API's (or the stream's) alert object."""
        return cls(
            id=str(doc["id"]),
            kind=str(doc.get("kind") or ""),
            severity=str(doc.get("severity") or "info"),
            state=str(doc.get("state") or "open"),
            message=str(doc.get("message") or ""),
            vault_id=doc.get("vault_id"),
            raised_at=when(doc.get("created_at")),
            updated_at=when(doc.get("updated_at")),
        )


@dataclass(frozen=True)
class AlertsState:
    """The alerts shown (newest first), how many are not resolved and how many of those are
    unread, whether resolved show."""

    rows: tuple[AlertRow, ...] = ()
    open: int = 0  # not resolved (open or acknowledged): what Home lists
    unread: int = 0
    show_resolved: bool = False
    loading: bool = False
    error: str | None = None


def _newest_first(rows: list[AlertRow]) -> tuple[AlertRow, ...]:
    return tuple(
        sorted(rows, key=lambda r: (r.raised_at is not None, r.raised_at, r.id), reverse=True)
    )


class AlertsViewModel(ViewModel[AlertsState]):
    """The alerts screen and the header's unread count."""

    def __init__(self, client: AsyncControlPlaneClient, on_change: Listener | None = None) -> None:
        super().__init__(AlertsState(), on_change)
        self.client = client
        self._all: dict[str, AlertRow] = {}
        self._seen: set[str] = set()  # ids the operator had in front of them at mark_read
        self._during: dict[str, AlertRow] | None = None  # events that arrive while reloading

    async def refresh(self) -> None:
        """Load every alert (all pages); an error goes to ``state.error``."""

        async def work() -> list[dict[str, Any]]:
            docs: list[dict[str, Any]] = []
            cursor: str | None = None
            while True:
                page = await self.client.list_alerts(cursor=cursor, limit=500)
                docs.extend(page["items"])
                cursor = page.get("next_cursor")
                if not cursor:
                    return docs

        during: dict[str, AlertRow] = {}
        self._during = during
        try:
            docs = await self._load(work)
        finally:
            if self._during is during:
                self._during = None
        if docs is not None:
            self._all = {str(d["id"]): AlertRow.from_json(d) for d in docs}
            self._all.update(during)  # an event newer than the page must not be lost
            self._publish()

    def _publish(self, **changes: Any) -> None:
        show = changes.get("show_resolved", self.state.show_resolved)
        rows = [r for r in self._all.values() if show or r.state != "resolved"]
        still_open = sum(1 for r in self._all.values() if r.state != "resolved")
        self._set(rows=_newest_first(rows), open=still_open, unread=self._unread(), **changes)

    def _unread(self) -> int:
        return sum(1 for r in self._all.values() if r.state == "open" and r.id not in self._seen)

    @property
    def open_rows(self) -> tuple[AlertRow, ...]:
        """Alerts not yet resolved (open or acknowledged), newest first."""
        return _newest_first([r for r in self._all.values() if r.state != "resolved"])

    def row(self, alert_id: str) -> AlertRow | None:
        """One alert (shown or not), or None."""
        return self._all.get(alert_id)

    async def acknowledge(self, alert_id: str) -> AlertRow:
        """open → acknowledged (raises the KeyVaultError)."""
        return self._put(await self.client.acknowledge_alert(alert_id))

    async def resolve(self, alert_id: str) -> AlertRow:
        """→ resolved (raises the KeyVaultError)."""
        return self._put(await self.client.resolve_alert(alert_id))

    def _put(self, doc: dict[str, Any]) -> AlertRow:
        row = AlertRow.from_json(doc)
        self._all[row.id] = row
        self._publish()
        return row

    def set_show_resolved(self, show: bool) -> None:
        """Include resolved alerts in ``rows`` or not."""
        self._publish(show_resolved=show)

    def mark_read(self) -> None:
        """The operator has seen the alerts: the unread count goes back to zero."""
        self._seen.update(r.id for r in self._all.values() if r.state == "open")
        if self.state.unread:
            self._set(unread=0)

    def apply_event(self, kind: str, data: dict[str, Any]) -> bool:
        """Apply ``alert.raised`` / ``alert.acknowledged`` / ``alert.resolved``; True if changed."""
        known = events.KINDS.get(kind)
        if known is None or known.family != "alert" or not isinstance(data.get("id"), str):
            return False
        row = AlertRow.from_json(data)
        if self._all.get(row.id) == row:
            return False
        self._all[row.id] = row
        if self._during is not None:
            self._during[row.id] = row
        self._publish()
        return True
