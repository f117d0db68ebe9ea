"""The per-vault secret inventory the agents report (metadata only: ids, versions, times,
policy, rotation state, sealed labels), and its keyset-paginated listing."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from control_plane import schema as t
from control_plane.db import insert_for, iso
from control_plane.services.principal import Principal

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from control_plane.services.vaults import Vaults

CHUNK = 500
_UPDATED = (
    "version",
    "created_at",
    "updated_at",
    "deleted_at",
    "policy_id",
    "rotation",
    "label",
    "reported_at",
)


def inventory_json(row: Any) -> dict[str, Any]:
    """One secret's entry as the API shows it."""
    return {
        "secret_id": row.secret_id,
        "version": row.version,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "deleted_at": iso(row.deleted_at),
        "policy_id": row.policy_id,
        "rotation": json.loads(row.rotation) if row.rotation else None,
        "label": row.label,
        "reported_at": iso(row.reported_at),
    }


class Inventory:
    """Applies inventory events and lists a vault's inventory."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        vaults: Vaults,
    ) -> None:
        self.engine = engine
        self.vaults = vaults

    async def live_count(self, conn: Any, vault_id: str) -> int:
        """How many of a vault's secrets are not deleted (in the caller's transaction)."""
        inv = t.inventory
        q = sa.select(sa.func.count()).where(inv.c.vault_id == vault_id, inv.c.deleted_at.is_(None))
        return int((await conn.execute(q)).scalar_one())

    async def apply(
        self, conn: Any, vault_id: str, items: list[tuple[str, dict[str, Any]]], now: datetime
    ) -> None:
        """Apply ``inventory``/``inventory_sync`` events in order, in the caller's transaction.

        Consecutive entries are collapsed (the latest of a secret wins) into one multi-row upsert
        and one delete; a sync first writes what came before it, then prunes every id it omits.
        """
        upserts: dict[str, dict[str, Any]] = {}
        deletes: set[str] = set()
        for kind, data in items:
            if kind == "inventory_sync":
                await self._flush(conn, vault_id, upserts, deletes)
                upserts, deletes = {}, set()
                await self._prune(conn, vault_id, set(data["secret_ids"]))
                continue
            secret_id = data["secret_id"]
            if data["destroyed"]:
                upserts.pop(secret_id, None)
                deletes.add(secret_id)
                continue
            deletes.discard(secret_id)
            upserts[secret_id] = {
                "vault_id": vault_id,
                "secret_id": secret_id,
                "version": data["version"],
                "created_at": data["created_at"],
                "updated_at": data["updated_at"],
                "deleted_at": data["deleted_at"],
                "policy_id": data["policy_id"],
                "rotation": None if data["rotation"] is None else json.dumps(data["rotation"]),
                "label": data["label"],
                "reported_at": now,
            }
        await self._flush(conn, vault_id, upserts, deletes)

    async def _flush(
        self, conn: Any, vault_id: str, upserts: dict[str, dict[str, Any]], deletes: set[str]
    ) -> None:
        inv = t.inventory
        if deletes:
            await self._delete(conn, vault_id, sorted(deletes))
        rows = list(upserts.values())
        for start in range(0, len(rows), CHUNK):
            ins = insert_for(self.engine, inv).values(rows[start : start + CHUNK])
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=["vault_id", "secret_id"],
                    set_={c: getattr(ins.excluded, c) for c in _UPDATED},
                )
            )

    async def _delete(self, conn: Any, vault_id: str, ids: list[str]) -> None:
        inv = t.inventory
        for start in range(0, len(ids), CHUNK):
            await conn.execute(
                inv.delete().where(
                    inv.c.vault_id == vault_id, inv.c.secret_id.in_(ids[start : start + CHUNK])
                )
            )

    async def _prune(self, conn: Any, vault_id: str, keep: set[str]) -> None:
        inv = t.inventory
        held = await conn.execute(sa.select(inv.c.secret_id).where(inv.c.vault_id == vault_id))
        stale = sorted({r.secret_id for r in held} - keep)
        if stale:
            await self._delete(conn, vault_id, stale)

    async def list(
        self, who: Principal, vault_id: str, *, after: str | None, limit: int
    ) -> dict[str, Any]:
        """A vault's inventory, keyset-paginated by secret id (404 for another org's vault)."""
        await self.vaults.get_row(who.org_id, vault_id)
        inv = t.inventory
        q = sa.select(inv).where(inv.c.vault_id == vault_id)
        if after:
            q = q.where(inv.c.secret_id > after)
        q = q.order_by(inv.c.secret_id).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(q))
        page = rows[:limit]
        return {
            "items": [inventory_json(r) for r in page],
            "next_cursor": page[-1].secret_id if len(rows) > limit else None,
        }
