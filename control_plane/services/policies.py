"""Rotation policies: metadata only (selectors are evaluated by agents, names being sealed)."""

from __future__ import annotations

import builtins
import json
import re
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from common import events
from common.errors import ConflictError, NotFoundError, ValidationError
from control_plane import schema as t
from control_plane.db import iso, new_id
from control_plane.services.principal import Principal

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from common.events import EventSink
    from control_plane.background import Clock

ROTATORS = ("random", "postgres", "command")
FIELDS = {"name", "selector", "interval_seconds", "notice_seconds", "rotator", "scope"}
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,64}$")
_SETTING_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# setting names that could carry secret material are refused outright; a postgres rotator's
# `connection` is only the *name* of a connection defined in the agent's own config
_FORBIDDEN = re.compile(r"pass|secret|token|key|credential|dsn|url|conn(?!ection$)", re.IGNORECASE)


def _check_name(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 200:
        raise ValidationError("name must be 1 to 200 characters")
    return value.strip()


def _check_selector(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) - {"labels", "name_glob"} or not value:
        raise ValidationError("selector must be an object with labels and/or name_glob")
    out: dict[str, Any] = {}
    if "labels" in value:
        labels = value["labels"]
        if (
            not isinstance(labels, dict)
            or len(labels) > 16
            or not all(
                isinstance(k, str) and _LABEL_RE.match(k) and isinstance(v, str) and len(v) <= 128
                for k, v in labels.items()
            )
        ):
            raise ValidationError("selector.labels must map up to 16 label names to strings")
        out["labels"] = labels
    if "name_glob" in value:
        glob = value["name_glob"]
        if not isinstance(glob, str) or not 1 <= len(glob) <= 200:
            raise ValidationError("selector.name_glob must be a 1-200 character glob")
        out["name_glob"] = glob
    return out


def _check_int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{field} must be a whole number from {low} to {high}")
    return value


def _check_rotator(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) - {"type", "settings"} or "type" not in value:
        raise ValidationError("rotator must be an object {type, settings}")
    if value["type"] not in ROTATORS:
        raise ValidationError(f"rotator.type must be one of {', '.join(ROTATORS)}")
    settings = value.get("settings", {})
    if not isinstance(settings, dict) or len(settings) > 20:
        raise ValidationError("rotator.settings must be an object of up to 20 settings")
    for key, item in settings.items():
        if not _SETTING_KEY.match(key):
            raise ValidationError(f"rotator setting {key!r} must be snake_case")
        if _FORBIDDEN.search(key):
            raise ValidationError(
                f"rotator setting {key!r} looks like a credential; policies hold no secrets "
                "(define connections in the agent's own config)"
            )
        if not isinstance(item, str | int | float | bool) or (
            isinstance(item, str) and len(item) > 200
        ):
            raise ValidationError(f"rotator setting {key!r} must be a short scalar")
    return {"type": value["type"], "settings": settings}


def _check_scope(value: Any) -> dict[str, Any]:
    if value == "all" or value == {"all": True}:
        return {"all": True}
    if isinstance(value, dict) and set(value) == {"vault_ids"}:
        ids = value["vault_ids"]
        if (
            isinstance(ids, list)
            and 1 <= len(ids) <= 1000
            and all(isinstance(i, str) and i.startswith("vlt_") and len(i) <= 40 for i in ids)
        ):
            return {"vault_ids": sorted(set(ids))}
    raise ValidationError('scope must be "all" or {"vault_ids": ["vlt_…", …]}')


def validate(doc: dict[str, Any], partial: bool) -> dict[str, Any]:
    """The policy fields of a create (all required) or update (any subset) body."""
    checks = {
        "name": _check_name,
        "selector": _check_selector,
        "interval_seconds": lambda v: _check_int(v, "interval_seconds", 60, 10 * 365 * 86400),
        "notice_seconds": lambda v: _check_int(v, "notice_seconds", 0, 365 * 86400),
        "rotator": _check_rotator,
        "scope": _check_scope,
    }
    if not partial:
        missing = sorted({"name", "selector", "interval_seconds", "rotator"} - set(doc))
        if missing:
            raise ValidationError(f"missing required field(s): {', '.join(missing)}")
    out = {key: checks[key](doc[key]) for key in FIELDS if key in doc}
    if not partial:
        out.setdefault("notice_seconds", 0)
        out.setdefault("scope", {"all": True})
    return out


def policy_json(row: Any) -> dict[str, Any]:
    """A policy as the API and the stream show it."""
    body = json.loads(row.body)
    return {
        "id": row.id,
        "name": row.name,
        "version": row.version,
        **body,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def uplink_policy(row: Any) -> dict[str, Any]:
    """A policy as the uplink's ``policies`` frame carries it."""
    return {"id": row.id, "name": row.name, "version": row.version, "body": json.loads(row.body)}


def applies_to(policy: dict[str, Any], vault_id: str) -> bool:
    """True when the policy's scope includes the vault."""
    scope = policy["body"].get("scope") or {"all": True}
    return bool(scope.get("all")) or vault_id in scope.get("vault_ids", ())


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
        self.clock = clock
        self.sink = sink

    async def _row(self, conn: Any, org_id: str, policy_id: str) -> Any:
        p = t.policies
        row = (
            await conn.execute(sa.select(p).where(p.c.id == policy_id, p.c.org_id == org_id))
        ).first()
        if row is None:
            raise NotFoundError(f"no policy {policy_id}")
        return row

    async def create(self, who: Principal, doc: dict[str, Any]) -> dict[str, Any]:
        """A new policy."""
        fields = validate(doc, partial=False)
        name = fields.pop("name")
        now, policy_id = self.clock(), new_id("pol")
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    t.policies.insert().values(
                        id=policy_id,
                        org_id=who.org_id,
                        name=name,
                        body=json.dumps(fields),
                        version=1,
                        created_at=now,
                        updated_at=now,
                    )
                )
                policy = policy_json(await self._row(conn, who.org_id, policy_id))
        except sa.exc.IntegrityError:
            raise ConflictError(f"a policy named {name!r} already exists") from None
        await self.sink.publish(
            events.make(events.POLICY_CREATED, who.org_id, self.clock(), policy)
        )
        return policy

    async def list(self, who: Principal) -> list[dict[str, Any]]:
        """Every policy of the organisation."""
        p = t.policies
        q = sa.select(p).where(p.c.org_id == who.org_id).order_by(p.c.name)
        async with self.engine.connect() as conn:
            return [policy_json(r) for r in await conn.execute(q)]

    async def for_uplink(self, org_id: str) -> builtins.list[dict[str, Any]]:
        """Every policy of the organisation in the uplink's shape, by name."""
        p = t.policies
        q = sa.select(p).where(p.c.org_id == org_id).order_by(p.c.name)
        async with self.engine.connect() as conn:
            return [uplink_policy(r) for r in await conn.execute(q)]

    async def get(self, who: Principal, policy_id: str) -> dict[str, Any]:
        """One policy."""
        async with self.engine.connect() as conn:
            return policy_json(await self._row(conn, who.org_id, policy_id))

    async def update(self, who: Principal, policy_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Change some fields; the version goes up by one."""
        fields = validate(doc, partial=True)
        if not fields:
            raise ValidationError("nothing to update")
        try:
            async with self.engine.begin() as conn:
                row = await self._row(conn, who.org_id, policy_id)
                body = {**json.loads(row.body), **{k: v for k, v in fields.items() if k != "name"}}
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
        await self.sink.publish(
            events.make(events.POLICY_UPDATED, who.org_id, self.clock(), policy)
        )
        return policy

    async def delete(self, who: Principal, policy_id: str) -> None:
        """Remove a policy."""
        async with self.engine.begin() as conn:
            await self._row(conn, who.org_id, policy_id)
            await conn.execute(t.policies.delete().where(t.policies.c.id == policy_id))
        await self.sink.publish(
            events.make(events.POLICY_DELETED, who.org_id, self.clock(), {"id": policy_id})
        )
