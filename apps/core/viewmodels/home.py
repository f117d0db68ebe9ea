"""The home screen: what needs the operator now, most severe first.

Built from the fleet and the alerts the shell already keeps live, so it needs no I/O of its own:
open alerts (failed and overdue rotations, integrity and audit problems), offline agents and
certificates near expiry. One item per problem: an offline vault with its open "offline" alert
is one item, and so is a certificate with its "expiring" alert. The counts are computed from the
same list the screen shows, so they can never disagree with it. Each item says where it is
fixed (``goto``: the alerts screen, or the vault's detail).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apps.core.names import NameBook
from apps.core.viewmodels.alerts import AlertRow, AlertsViewModel
from apps.core.viewmodels.base import Listener, ViewModel
from apps.core.viewmodels.vaults import VaultRow, VaultsViewModel

# agent certificates are short-lived and renewed while online (the control plane alerts from
# min(6 h, a quarter of their life) left); near expiry here means renewal is not happening
CERT_WARNING = timedelta(hours=6)
CERT_CRITICAL = timedelta(hours=1)
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
# categories in the order the screen groups them, with their headings
CATEGORIES: dict[str, str] = {
    "rotation_failed": "Failed rotations",
    "rotation_overdue": "Overdue rotations",
    "offline": "Offline agents",
    "certificate": "Certificates near expiry",
    "alert": "Other open alerts",
}
NOUNS = {  # one of each, for the summary line
    "rotation_failed": "failed rotation",
    "rotation_overdue": "overdue rotation",
    "offline": "offline agent",
    "certificate": "expiring certificate",
    "alert": "other alert",
}
ALERT_CATEGORY = {
    "rotation_failed": "rotation_failed",
    "rotation_overdue": "rotation_overdue",
    "vault_offline": "offline",
    "certificate_expiring": "certificate",
}
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class NeedItem:
    """One thing to act on; ``goto`` is ``alerts`` (with ``alert_id``) or ``vault``."""

    key: str
    category: str
    severity: str
    title: str
    detail: str
    since: datetime | None
    vault_id: str | None = None
    alert_id: str | None = None
    goto: str = "alerts"


@dataclass(frozen=True)
class HomeState:
    """The list, and counts per category derived from it."""

    items: tuple[NeedItem, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    loading: bool = False
    error: str | None = None

    @property
    def total(self) -> int:
        """How many things need the operator (always ``len(items)``)."""
        return len(self.items)

    def summary(self) -> str:
        """'3 things need you: 1 failed rotation, 2 offline agents' (or 'Nothing needs you')."""
        if not self.items:
            return "Nothing needs you now"
        parts = [plural(n, NOUNS[c]) for c, n in self.counts.items() if n]
        return f"{plural(self.total, 'thing')} need{'s' if self.total == 1 else ''} you: " + (
            ", ".join(parts)
        )


def plural(count: int, noun: str) -> str:
    """'1 alert', '2 alerts' (never '1 alerts')."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _rank(item: NeedItem) -> tuple[int, int, float]:
    since = item.since.timestamp() if item.since else float("inf")
    return (SEVERITY_RANK.get(item.severity, 9), list(CATEGORIES).index(item.category), since)


def build_items(
    vaults: tuple[VaultRow, ...], alerts: tuple[AlertRow, ...], names: NameBook, now: datetime
) -> tuple[NeedItem, ...]:
    """Every problem once, most severe first (then by category, then longest waiting)."""
    items: dict[str, NeedItem] = {}
    for alert in alerts:
        if alert.state == "resolved":
            continue
        category = ALERT_CATEGORY.get(alert.kind, "alert")
        key = _key(category, alert.vault_id, alert.id)
        title = names.humanize(alert.message, alert.vault_id) or alert.kind.replace("_", " ")
        detail = (
            f"{alert.state}; in {names.vault(alert.vault_id)}" if alert.vault_id else alert.state
        )
        items[key] = NeedItem(
            key, category, alert.severity, title, detail, alert.raised_at, alert.vault_id, alert.id
        )
    for vault in vaults:
        if vault.revoked:
            continue
        name = names.vault(vault.id)
        key = _key("offline", vault.id, None)
        if vault.status == "offline" and key not in items:
            items[key] = NeedItem(
                key, "offline", "critical", f"{name} is offline", "no alert yet",
                vault.last_seen, vault.id, goto="vault",
            )  # fmt: skip
        cert = _cert_item(vault, name, now)
        if cert is not None and cert.key not in items:
            items[cert.key] = cert
    return tuple(sorted(items.values(), key=_rank))


def _key(category: str, vault_id: str | None, alert_id: str | None) -> str:
    """Offline and certificate problems are one per vault; other alerts one per alert."""
    if category in ("offline", "certificate") and vault_id:
        return f"{category}:{vault_id}"
    return f"alert:{alert_id}"


def _cert_item(vault: VaultRow, name: str, now: datetime) -> NeedItem | None:
    if vault.cert_expiry is None or vault.cert_expiry - now > CERT_WARNING:
        return None
    left = vault.cert_expiry - now
    severity = "critical" if left <= CERT_CRITICAL else "warning"
    hours = left.total_seconds() / 3600
    when = (
        "expired"
        if hours <= 0
        else f"expires in {hours:.0f} h"
        if hours >= 1
        else "expires within the hour"
    )
    return NeedItem(
        f"certificate:{vault.id}", "certificate", severity, f"{name}: certificate {when}",
        "renewed automatically while the agent is online", vault.cert_expiry, vault.id,
        goto="vault",
    )  # fmt: skip


class HomeViewModel(ViewModel[HomeState]):
    """Follows the fleet and the alerts and keeps the "needs me now" list current."""

    def __init__(
        self,
        vaults: VaultsViewModel,
        alerts: AlertsViewModel,
        names: NameBook,
        on_change: Listener | None = None,
        *,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(HomeState(), on_change)
        self.vaults, self.alerts, self.names, self.clock = vaults, alerts, names, clock
        self._unsubscribe = [vaults.subscribe(self._changed), alerts.subscribe(self._changed)]
        self.rebuild()

    def _changed(self, _state: Any) -> None:
        self.rebuild()

    def rebuild(self) -> None:
        """Recompute the list from the current fleet and alerts."""
        items = build_items(self.vaults.state.rows, self.alerts.open_rows, self.names, self.clock())
        counts = {c: sum(1 for i in items if i.category == c) for c in CATEGORIES}
        error = self.vaults.state.error or self.alerts.state.error
        loading = self.vaults.state.loading or self.alerts.state.loading
        if (items, counts, error, loading) != (
            self.state.items,
            self.state.counts,
            self.state.error,
            self.state.loading,
        ):
            self._set(items=items, counts=counts, error=error, loading=loading)

    async def refresh(self) -> None:
        """Reload the fleet and the alerts (errors go to their states, shown here too)."""
        await self.vaults.refresh()
        await self.alerts.refresh()

    def close(self) -> None:
        """Stop following the fleet and the alerts."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
