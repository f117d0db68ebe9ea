"""Usage analytics: counts per day over a range, per operation and per vault, zero-filled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from apps.core.viewmodels.base import Listener, ViewModel
from common.errors import ValidationError

RANGES = (7, 30, 90)
MAX_DAYS = 366


def _today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True)
class UsageState:
    """Series of one count per day of ``days`` (oldest first), zero where nothing happened."""

    days: tuple[str, ...] = ()
    by_operation: dict[str, tuple[int, ...]] = field(default_factory=dict)
    by_vault: dict[str, tuple[int, ...]] = field(default_factory=dict)
    total: int = 0
    start: str | None = None
    end: str | None = None
    vault_id: str | None = None
    range_days: int = 30
    loading: bool = False
    error: str | None = None


def day_span(start: str, end: str) -> tuple[str, ...]:
    """Every ISO date from ``start`` to ``end``, both included."""
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    return tuple((first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1))


def series(
    days: tuple[str, ...], rows: list[dict[str, Any]], key: str
) -> dict[str, tuple[int, ...]]:
    """Sum ``count`` per ``row[key]`` and day: one zero-filled tuple per key, keys sorted."""
    index = {day: n for n, day in enumerate(days)}
    sums: dict[str, list[int]] = {}
    for row in rows:
        slot = index.get(str(row.get("day")))
        if slot is None:
            continue
        counts = sums.setdefault(str(row.get(key)), [0] * len(days))
        counts[slot] += int(row.get("count") or 0)
    return {name: tuple(sums[name]) for name in sorted(sums)}


class UsageViewModel(ViewModel[UsageState]):
    """The usage chart's data for the last N days, for all vaults or one."""

    def __init__(
        self,
        client: Any,
        on_change: Listener | None = None,
        *,
        today: Callable[[], date] = _today,
    ) -> None:
        super().__init__(UsageState(), on_change)
        self.client = client
        self._today = today

    async def refresh(self) -> None:
        """Load the current range (errors go to ``state.error``)."""
        end = self._today()
        start = end - timedelta(days=self.state.range_days - 1)
        vault_id = self.state.vault_id

        async def work() -> None:
            doc = await self.client.usage(start.isoformat(), end.isoformat(), vault_id)
            self._show(doc)

        await self._load(work)

    def _show(self, doc: dict[str, Any]) -> None:
        days = day_span(str(doc["from"]), str(doc["to"]))
        rows = list(doc.get("rows") or [])
        self._set(
            days=days,
            by_operation=series(days, rows, "operation"),
            by_vault=series(days, rows, "vault_id"),
            total=int(doc.get("total", sum(int(r.get("count") or 0) for r in rows))),
            start=days[0] if days else None,
            end=days[-1] if days else None,
        )

    async def set_range(self, days: int) -> None:
        """Show the last ``days`` days (7, 30 or 90 in the UI; up to 366) and reload."""
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
            raise ValidationError(
                f"the range must be 1 to {MAX_DAYS} days", details={"field": "days"}
            )
        self._set(range_days=days)
        await self.refresh()

    async def set_vault(self, vault_id: str | None) -> None:
        """Count one vault only (None: every vault) and reload."""
        self._set(vault_id=vault_id or None)
        await self.refresh()
