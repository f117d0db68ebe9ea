"""The fleet: every vault with its live status, filtered and sorted locally."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from operator import attrgetter
from typing import Any

from apps.core.filtering import needle_of
from apps.core.viewmodels.base import Listener, ViewModel, when
from common import events
from common.cpclient import AsyncControlPlaneClient
from common.errors import KeyVaultError, ValidationError

COLUMNS = ("name", "id", "status", "last_seen", "secret_count", "version", "cert_expiry")


@dataclass(frozen=True)
class VaultRow:
    """One vault as the fleet table shows it."""

    id: str
    name: str
    status: str
    last_seen: datetime | None
    secret_count: int | None
    version: str | None
    cert_expiry: datetime | None
    revoked: bool

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> VaultRow:
        """A row from the API's vault object."""
        health = doc.get("health") or {}
        counts = health.get("counts") if isinstance(health, dict) else None
        secrets = counts.get("secrets") if isinstance(counts, dict) else None
        return cls(
            id=str(doc["id"]),
            name=str(doc.get("name") or ""),
            status=str(doc.get("status") or "pending"),
            last_seen=when(doc.get("last_heartbeat_at")),
            secret_count=secrets if isinstance(secrets, int) else None,
            version=doc.get("agent_version"),
            cert_expiry=when(doc.get("certificate_not_after")),
            revoked=doc.get("revoked_at") is not None or doc.get("status") == "revoked",
        )

    @property
    def haystack(self) -> str:
        """What the filter searches: name, id, status and version, lower-cased."""
        return f"{self.name}\n{self.id}\n{self.status}\n{self.version or ''}".lower()


@dataclass(frozen=True)
class VaultsState:
    """The fleet table: all rows, the visible (filtered, sorted) ones and how."""

    rows: tuple[VaultRow, ...] = ()
    visible: tuple[VaultRow, ...] = ()
    filter: str = ""
    sort: str = "name"
    descending: bool = False
    loading: bool = False
    error: str | None = None
    total: int = 0


def _sorted(rows: list[VaultRow], column: str, descending: bool) -> list[VaultRow]:
    """Rows sorted by one column; rows without a value go last either way."""
    get: Callable[[VaultRow], Any] = _KEYS[column]
    if column in _NEVER_NONE:
        rows.sort(key=get, reverse=descending)
        return rows
    present = [r for r in rows if get(r) is not None]
    present.sort(key=get, reverse=descending)
    return present + [r for r in rows if get(r) is None]


_NEVER_NONE = frozenset({"name", "id", "status"})


_KEYS: dict[str, Callable[[VaultRow], Any]] = {
    "name": lambda r: r.name.lower(),
    "id": attrgetter("id"),
    "status": attrgetter("status"),
    "last_seen": lambda r: r.last_seen,
    "secret_count": lambda r: r.secret_count,
    "version": lambda r: r.version,
    "cert_expiry": lambda r: r.cert_expiry,
}


class VaultsViewModel(ViewModel[VaultsState]):
    """The vaults screen: load, filter, sort, follow status events, revoke."""

    def __init__(self, client: AsyncControlPlaneClient, on_change: Listener | None = None) -> None:
        super().__init__(VaultsState(), on_change)
        self.client = client
        self._rows: dict[str, VaultRow] = {}
        self._hay: dict[str, str] = {}
        self._order: list[VaultRow] = []
        self._index: dict[str, int] = {}

    async def refresh(self) -> None:
        """Load every vault (all pages); an error goes to ``state.error``."""

        async def work() -> list[dict[str, Any]]:
            return [doc async for doc in self.client.iter_vaults()]

        docs = await self._load(work)
        if docs is not None:
            self.set_rows([VaultRow.from_json(d) for d in docs])

    def set_rows(self, rows: list[VaultRow]) -> None:
        """Replace every row (a reload's result), keeping the filter and the sort."""
        self._rows = {r.id: r for r in rows}
        self._hay = {r.id: r.haystack for r in rows}
        self._resort()
        self._publish()

    def _resort(self) -> None:
        state = self.state
        self._order = _sorted(list(self._rows.values()), state.sort, state.descending)
        self._index = {r.id: i for i, r in enumerate(self._order)}

    def _publish(self, **changes: Any) -> None:
        needle = needle_of(changes.get("filter", self.state.filter))
        if needle:
            hay = self._hay
            visible = tuple(r for r in self._order if needle in hay[r.id])
        else:
            visible = tuple(self._order)
        self._set(
            rows=tuple(self._rows.values()), visible=visible, total=len(self._rows), **changes
        )

    def set_filter(self, text: str) -> None:
        """Show only rows whose name, id, status or version contains ``text`` (any case)."""
        self._publish(filter=text)

    def set_sort(self, column: str, descending: bool | None = None) -> None:
        """Sort by ``column``; the same column again flips the direction unless it is given."""
        if column not in _KEYS:
            raise ValidationError(
                f"cannot sort by {column!r}; choose one of {', '.join(COLUMNS)}",
                details={"field": "sort"},
            )
        state = self.state
        if descending is None:
            descending = not state.descending if column == state.sort else False
        self._state = replace(state, sort=column, descending=descending)
        self._resort()
        self._publish()

    def row(self, vault_id: str) -> VaultRow | None:
        """The row of one vault, or None."""
        return self._rows.get(vault_id)

    def apply_event(self, kind: str, data: dict[str, Any]) -> bool:
        """Apply ``vault.status`` / ``vault.registered`` / ``inventory.changed`` (its secret count)
        without a reload; True if anything changed."""
        vault_id = data.get("vault_id")
        if not isinstance(vault_id, str):
            return False
        old = self._rows.get(vault_id)
        if kind == events.VAULT_STATUS.name and old is not None:
            status = str(data.get("status") or old.status)
            if status == old.status:
                return False
            self._put(replace(old, status=status, revoked=old.revoked or status == "revoked"))
            return True
        if kind == events.INVENTORY_CHANGED.name and old is not None:
            count = data.get("secrets")
            if not isinstance(count, int) or count == old.secret_count:
                return False
            self._put(replace(old, secret_count=count))
            return True
        if kind == events.VAULT_REGISTERED.name and old is None:
            name = str(data.get("name") or vault_id)
            self._put(VaultRow(vault_id, name, "pending", None, None, None, None, False))
            return True
        return False

    def _put(self, row: VaultRow) -> None:
        """Insert or replace one row, re-sorting only when its sort key moved."""
        old = self._rows.get(row.id)
        self._rows[row.id] = row
        self._hay[row.id] = row.haystack
        get = _KEYS[self.state.sort]
        if old is not None and get(old) == get(row):
            self._order[self._index[row.id]] = row
        else:
            self._resort()
        self._publish()

    async def reload_last_seen(self, vault_id: str) -> None:
        """Fetch one vault's true last heartbeat (a status event does not carry it); the
        status stays as the events say. An error leaves the row as it is."""
        try:
            doc = await self.client.get_vault(vault_id)
        except KeyVaultError:
            return
        row = self._rows.get(vault_id)
        seen = VaultRow.from_json(doc).last_seen
        if row is not None and seen != row.last_seen:
            self._put(replace(row, last_seen=seen))

    async def revoke(self, vault_id: str) -> VaultRow:
        """Revoke a vault (raises the KeyVaultError); the row shows it at once."""
        row = VaultRow.from_json(await self.client.revoke_vault(vault_id))
        self._put(row)
        return row
