"""Rotation policies: sealed intents relayed as they are, checked only in what is clear.

An operator app seals a policy (``common/intents.py``); the control plane checks the clear header
(interval, notice, target vaults — all covered by the intent's tag), stores it and sends it to
agents, which alone can open and verify it. Plaintext policies (from before, or the legacy API
body) are still stored and listed, but agents refuse them until an app re-saves them sealed.
"""

from __future__ import annotations

import builtins
import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from common import events, intents
from common.errors import ConflictError, NotFoundError, ValidationError
from control_plane import schema as t
from control_plane.db import DUPLICATE, autocommit, fetch, fetch_grouped, is_postgres, iso, new_id
from control_plane.services.policy_rules import (
    CLEAR,
    MAX_POLICIES,
    check_intent,
    cross_check,
    fail,
    validate,
)
from control_plane.services.principal import Principal

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from common.events import EventSink
    from control_plane.background import Clock


def policy_json(row: Any) -> dict[str, Any]:
    """A policy as the API and the stream show it: a sealed one shows its clear header fields and
    the intent (apps open name, selector and rotator locally); a plaintext one, as it was."""
    body = json.loads(row.body)
    doc = {
        "id": row.id,
        "version": row.version,
        "sealed": row.intent is not None,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }
    if row.intent is None:
        return {**doc, "name": row.name, **body}
    return {**doc, **{k: body.get(k) for k in CLEAR}, "intent": json.loads(row.intent)}


def uplink_policy(row: Any) -> dict[str, Any]:
    """A policy as the uplink's ``policies`` frame carries it: the sealed intent as it is (a
    plaintext row in its old shape, which agents refuse)."""
    if row.intent is not None:
        return dict(json.loads(row.intent))
    return {"id": row.id, "name": row.name, "version": row.version, "body": json.loads(row.body)}


def applies_to(policy: dict[str, Any], vault_id: str) -> bool:
    """True when a policy goes to the vault's agent: every sealed intent does (the agent checks
    the authenticated scope itself, so a re-scoped policy is seen to leave); a plaintext one only
    when its scope includes the vault."""
    if "mac" in policy:
        return True
    scope = policy["body"].get("scope") or {"all": True}
    return bool(scope.get("all")) or vault_id in scope.get("vault_ids", ())


def _clear(header: intents.Header) -> str:
    scope = {"all": True} if header.vault_ids is None else {"vault_ids": list(header.vault_ids)}
    return json.dumps({"interval_seconds": header.interval_seconds,
                       "notice_seconds": header.notice_seconds, "scope": scope})  # fmt: skip


# Policies.for_uplinks on PostgreSQL (for_uplink's SQLAlchemy query is used on SQLite)
_PG_UPLINK = """
SELECT org_id, id, name, version, body, intent FROM cp_policies
WHERE org_id = ANY(%s::text[]) AND (deleted_at IS NULL OR intent IS NOT NULL)
ORDER BY org_id, id
"""


# Policies._insert on PostgreSQL for a policy that names no vaults: the room check rides in the
# INSERT, one statement in autocommit on the driver's connection (committed durably: the
# connection's synchronous_commit is the server's, on)
_PG_INSERT = """
INSERT INTO cp_policies (org_id, id, name, body, version, intent, created_at, updated_at)
SELECT %(org_id)s::varchar, %(id)s::varchar, %(name)s::varchar, %(body)s::text,
       %(version)s::integer, %(intent)s::text, %(created_at)s::timestamptz,
       %(updated_at)s::timestamptz
WHERE (SELECT count(*) FROM cp_policies WHERE org_id = %(org_id)s::varchar) < %(most)s::integer
RETURNING id, org_id, name, body, version, created_at, updated_at, intent, deleted_at
"""


class Policies:
    """CRUD of rotation policies, publishing every change to the organisation's streams."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        sink: EventSink,
    ) -> None:
        self.engine = engine
        self.single = autocommit(engine)  # one-statement reads: one round trip each
        self._pg = is_postgres(engine)
        self.clock = clock
        self.sink = sink

    async def _publish(self, kind: events.EventKind, org_id: str, data: dict[str, Any]) -> None:
        await self.sink.publish(events.make(kind, org_id, self.clock(), data))

    async def _row(self, conn: Any, org_id: str, policy_id: str, *, deleted: bool = False) -> Any:
        p = t.policies
        q = sa.select(p).where(p.c.id == policy_id, p.c.org_id == org_id)
        if not deleted:
            q = q.where(p.c.deleted_at.is_(None))
        row = (await conn.execute(q)).first()
        if row is None:
            raise NotFoundError(f"no policy {policy_id}")
        return row

    async def _check_vaults(self, conn: Any, org_id: str, ids: Any) -> None:
        """Every vault id a scope names must be one of the organisation's vaults."""
        if not ids:
            return
        v = t.vaults
        q = sa.select(v.c.id).where(v.c.org_id == org_id, v.c.id.in_(list(ids)))
        found = {r.id for r in await conn.execute(q)}
        missing = sorted(set(ids) - found)
        if missing:
            raise fail(
                {
                    "scope": f"no vault {missing[0]} in this organisation"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                }
            )

    async def _insert(self, org_id: str, values: dict[str, Any], vault_ids: Any) -> Any:
        """Store a new policy and return its row as stored; ConflictError when the organisation
        already holds :data:`MAX_POLICIES` (tombstones included) or the name is taken.

        The room check rides in the INSERT (``INSERT … SELECT … WHERE (SELECT count(*) …) < max
        RETURNING …``), so a policy that names no vaults is one statement, one round trip in
        autocommit; one that names vaults checks them first, in the same transaction. This is
        the request behind every ``policy.created`` event: its round trips come before the event.
        On PostgreSQL the one statement runs on the driver's connection (:data:`_PG_INSERT`).
        """
        if self._pg and not vault_ids:
            params = {"intent": None, "org_id": org_id, "most": MAX_POLICIES, **values}
            rows = await fetch(self.engine, _PG_INSERT, params)
            if not rows:
                raise ConflictError(f"an organisation holds at most {MAX_POLICIES} policies")
            return rows[0]
        p = t.policies
        row = {"org_id": org_id, **values}
        room = sa.select(sa.func.count()).where(p.c.org_id == org_id).scalar_subquery()
        chosen = sa.select(*(sa.literal(v, p.c[k].type).label(k) for k, v in row.items()))
        query = p.insert().from_select(list(row), chosen.where(room < MAX_POLICIES)).returning(p)
        engine = self.engine if vault_ids else self.single
        async with engine.begin() as conn:
            await self._check_vaults(conn, org_id, vault_ids)
            stored = (await conn.execute(query)).first()
        if stored is None:
            raise ConflictError(f"an organisation holds at most {MAX_POLICIES} policies")
        return stored

    async def create(self, who: Principal, doc: dict[str, Any]) -> dict[str, Any]:
        """A new policy: a sealed intent (``{"intent": …}``), or plaintext fields (legacy)."""
        if "intent" in doc:
            return await self._create_sealed(who, doc)
        fields = validate(doc, partial=False)
        name = fields.pop("name")
        now = self.clock()
        values = {"id": new_id("pol"), "name": name, "body": json.dumps(fields), "version": 1}
        values |= {"created_at": now, "updated_at": now}
        try:
            row = await self._insert(who.org_id, values, fields["scope"].get("vault_ids"))
        except DUPLICATE:
            raise ConflictError(f"a policy named {name!r} already exists") from None
        policy = policy_json(row)
        await self._publish(events.POLICY_CREATED, who.org_id, policy)
        return policy

    async def _create_sealed(self, who: Principal, doc: dict[str, Any]) -> dict[str, Any]:
        if set(doc) != {"intent"}:
            raise fail({"intent": 'a sealed policy is sent as {"intent": …} alone'})
        header = check_intent(doc["intent"], ("policy",))
        if header.revision != 1:
            raise fail({"intent": "a new policy's first revision is 1"})
        now = self.clock()
        values = {"id": header.id, "name": header.id, "body": _clear(header), "version": 1}
        values |= {"intent": json.dumps(doc["intent"]), "created_at": now, "updated_at": now}
        try:
            row = await self._insert(who.org_id, values, header.vault_ids)
        except DUPLICATE:
            raise ConflictError(f"a policy {header.id} already exists") from None
        policy = policy_json(row)
        await self._publish(events.POLICY_CREATED, who.org_id, policy)
        return policy

    async def list(self, who: Principal) -> list[dict[str, Any]]:
        """Every policy of the organisation (not the deleted ones)."""
        p = t.policies
        q = (
            sa.select(p)
            .where(p.c.org_id == who.org_id, p.c.deleted_at.is_(None))
            .order_by(p.c.name)
        )
        async with self.engine.connect() as conn:
            return [policy_json(r) for r in await conn.execute(q)]

    async def for_uplink(self, org_id: str) -> builtins.list[dict[str, Any]]:
        """Every policy of the organisation in the uplink's shape (sealed deletions included)."""
        if is_postgres(self.engine):
            return (await self.for_uplinks({org_id: None}))[org_id]
        p = t.policies
        q = (
            sa.select(p)
            .where(p.c.org_id == org_id, sa.or_(p.c.deleted_at.is_(None), p.c.intent.is_not(None)))
            .order_by(p.c.id)
        )
        async with self.single.connect() as conn:
            return [uplink_policy(r) for r in await conn.execute(q)]

    async def for_uplinks(
        self, org_ids: dict[str, None]
    ) -> dict[str, builtins.list[dict[str, Any]]]:
        """:meth:`for_uplink` of several organisations at once (the agents connecting at the same
        time, ``gateway/agent_link.py``); on PostgreSQL one statement on the driver's
        connection."""
        if not is_postgres(self.engine):
            return {org_id: await self.for_uplink(org_id) for org_id in org_ids}
        return await fetch_grouped(self.engine, _PG_UPLINK, org_ids, "org_id", uplink_policy)

    async def get(self, who: Principal, policy_id: str) -> dict[str, Any]:
        """One policy."""
        async with self.engine.connect() as conn:
            return policy_json(await self._row(conn, who.org_id, policy_id))

    async def update(self, who: Principal, policy_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Replace a policy by a newer sealed revision, or change plaintext fields (legacy, the
        version going up by one)."""
        if "intent" in doc:
            return await self._update_sealed(who, policy_id, doc)
        fields = validate(doc, partial=True)
        if not fields:
            raise ValidationError("nothing to update")
        try:
            async with self.engine.begin() as conn:
                row = await self._row(conn, who.org_id, policy_id)
                if row.intent is not None:
                    raise fail({"intent": "a sealed policy changes only by a newer sealed "
                                "revision (keyvault policies edit, or an operator app)"})  # fmt: skip
                body = {**json.loads(row.body), **{k: v for k, v in fields.items() if k != "name"}}
                errors: dict[str, str] = {}
                cross_check(body, errors)
                if errors:
                    raise fail(errors)
                await self._check_vaults(conn, who.org_id, body["scope"].get("vault_ids"))
                await conn.execute(
                    t.policies.update()
                    .where(t.policies.c.id == policy_id)
                    .values(
                        name=fields.get("name", row.name),
                        body=json.dumps(body),
                        version=row.version + 1,
                        updated_at=self.clock(),
                    )
                )
                policy = policy_json(await self._row(conn, who.org_id, policy_id))
        except sa.exc.IntegrityError:
            raise ConflictError(f"a policy named {fields.get('name')!r} already exists") from None
        await self._publish(events.POLICY_UPDATED, who.org_id, policy)
        return policy

    async def _replace(
        self, conn: Any, who: Principal, policy_id: str, doc: dict[str, Any], kinds: tuple[str, ...]
    ) -> intents.Header:
        """Check a newer sealed revision of a policy and store it in the caller's transaction."""
        if set(doc) != {"intent"}:
            raise fail({"intent": 'a sealed change is sent as {"intent": …} alone'})
        header = check_intent(doc["intent"], kinds)
        if header.id != policy_id:
            raise fail({"intent": f"the intent is for {header.id}, not {policy_id}"})
        row = await self._row(conn, who.org_id, policy_id)
        if header.revision <= row.version:
            raise ConflictError(
                f"policy {policy_id} is at revision {row.version}; send revision "
                f"{row.version + 1} (reload it and edit again)"
            )
        await self._check_vaults(conn, who.org_id, header.vault_ids)
        now = self.clock()
        values: dict[str, Any] = {"version": header.revision, "intent": json.dumps(doc["intent"]),
                                  "updated_at": now}  # fmt: skip
        if header.kind == "policy_delete":
            values["deleted_at"] = now
        else:
            values["body"] = _clear(header)
        await conn.execute(t.policies.update().where(t.policies.c.id == policy_id).values(**values))
        return header

    async def _update_sealed(
        self, who: Principal, policy_id: str, doc: dict[str, Any]
    ) -> dict[str, Any]:
        async with self.engine.begin() as conn:
            await self._replace(conn, who, policy_id, doc, ("policy",))
            policy = policy_json(await self._row(conn, who.org_id, policy_id))
        await self._publish(events.POLICY_UPDATED, who.org_id, policy)
        return policy

    async def delete(
        self, who: Principal, policy_id: str, doc: dict[str, Any] | None = None
    ) -> None:
        """Remove a policy: a sealed one by a sealed deletion (``{"intent": …}``, kept as a
        tombstone the agents receive), a plaintext one outright."""
        async with self.engine.begin() as conn:
            row = await self._row(conn, who.org_id, policy_id)
            if row.intent is None and not doc:
                await conn.execute(t.policies.delete().where(t.policies.c.id == policy_id))
            elif doc:
                await self._replace(conn, who, policy_id, doc, ("policy_delete",))
            else:
                raise fail({"intent": "a sealed policy is deleted by a sealed deletion "
                            "(keyvault policies delete, or an operator app)"})  # fmt: skip
        await self._publish(events.POLICY_DELETED, who.org_id, {"id": policy_id})
