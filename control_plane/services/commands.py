"""Commands to vault agents (rotate a secret, resync): stored, routed, and their results.

A command is stored ``pending`` and then routed (``EventBus.route``) to every replica; the one
holding the vault's uplink sends it and marks it ``sent``. Unfinished commands are sent again on
every connect (agents execute each id at most once). The agent's ``command_result`` event marks
it ``succeeded`` or ``failed``, once, and ``command.result`` goes to the operator streams.
Commands carry no secret material: a command names a secret only by its opaque id.
"""

from __future__ import annotations

import builtins
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from common import intents, uplink
from common.errors import ConflictError, NotFoundError, ValidationError
from control_plane import schema as t
from control_plane.db import autocommit, fetch_grouped, is_postgres, iso, new_sorted_id
from control_plane.services.principal import Principal

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from control_plane.background import Clock
    from control_plane.bus import EventBus
    from control_plane.services.vaults import Vaults

STATES = ("pending", "sent", "succeeded", "failed")
UNFINISHED = ("pending", "sent")
FIELDS = {"command", "args", "intent"}
SEALED = "sealed"  # the ``command`` column of a sealed command (what it is, only agents know)
MAX_RESULT = 1000


def command_json(row: Any) -> dict[str, Any]:
    """A command as the API and the stream show it (a sealed one with its intent, which operator
    apps open locally)."""
    doc = {
        "id": row.id,
        "vault_id": row.vault_id,
        "command": row.command,
        "args": json.loads(row.args),
        "state": row.state,
        "result": row.result,
        "created_by": row.created_by,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }
    if row.intent is not None:
        doc["intent"] = json.loads(row.intent)
    return doc


def command_frame(row: Any) -> dict[str, Any]:
    """The uplink ``command`` frame of a command row: the sealed intent as it is (a plaintext
    row in its old shape, which agents refuse)."""
    if row.intent is not None:
        return {"type": "command", "id": row.id, "intent": json.loads(row.intent)}
    return {"type": "command", "id": row.id, "command": row.command, "args": json.loads(row.args)}


def check_sealed(doc: dict[str, Any], vault_id: str, now: datetime) -> intents.Header:
    """The clear header of a sealed command for ``vault_id``: shape, target and expiry."""
    if set(doc) != {"intent"}:
        raise ValidationError('a sealed command is sent as {"intent": …} alone')
    intents.check_size(doc["intent"])
    header = intents.parse_header(doc["intent"])
    if header.kind != "command":
        raise ValidationError("this call takes a command intent")
    if header.vault_ids != (vault_id,):
        raise ValidationError(f"the command is sealed for another vault, not {vault_id}")
    assert header.expires_at is not None
    if header.expires_at <= now or header.expires_at - now > intents.MAX_COMMAND_TTL:
        raise ValidationError("the command is expired (or lives longer than 7 days); seal anew")
    return header


def check_command(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(command, args) of a create body: ``rotate {secret_id}`` or ``resync {}``."""
    command = doc.get("command")
    if not isinstance(command, str) or command not in uplink.COMMANDS:
        raise ValidationError(f"command must be one of {', '.join(sorted(uplink.COMMANDS))}")
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise ValidationError("args must be an object")
    if command == "rotate":
        if set(args) != {"secret_id"}:
            raise ValidationError('rotate takes args {"secret_id": "sec_…"} and nothing else')
        secret_id = uplink.opaque_id(args["secret_id"], "args.secret_id")
        return command, {"secret_id": secret_id}
    if args:
        raise ValidationError("resync takes no args")
    return command, {}


# Commands.unfinished_of on PostgreSQL (unfinished_frames's SQLAlchemy query is used on SQLite)
_PG_UNFINISHED = """
SELECT c.vault_id, c.id, c.command, c.args, c.intent
FROM unnest(%s::text[]) AS b(id), LATERAL (
    SELECT vault_id, id, command, args, intent FROM cp_commands
    WHERE vault_id = b.id AND state IN ('pending', 'sent')
    ORDER BY id LIMIT 1000
) AS c
ORDER BY c.vault_id, c.id
"""


class Commands:
    """Creates, lists and finishes commands."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        clock: Clock,
        bus: EventBus,
        vaults: Vaults,
    ) -> None:
        self.engine = engine
        self.single = autocommit(engine)  # one-statement reads: one round trip each
        self.clock = clock
        self.bus = bus
        self.vaults = vaults

    async def create(self, who: Principal, vault_id: str, doc: dict[str, Any]) -> dict[str, Any]:
        """Store a command for one of the organisation's vaults and route it to its uplink: a
        sealed intent (``{"intent": …}``), or a plaintext one (legacy; agents refuse it)."""
        now = self.clock()
        header = check_sealed(doc, vault_id, now) if "intent" in doc else None
        command, args = (SEALED, {}) if header is not None else check_command(doc)
        vault = await self.vaults.get_row(who.org_id, vault_id)
        if vault.revoked_at is not None:
            raise ConflictError(f"vault {vault_id} is revoked; it takes no commands")
        row = {
            "id": header.id if header is not None else new_sorted_id("cmd", now),
            "org_id": who.org_id,
            "vault_id": vault_id,
            "command": command,
            "args": json.dumps(args),
            "state": "pending",
            "result": None,
            "created_by": who.user_id,
            "created_at": now,
            "updated_at": now,
            "intent": json.dumps(doc["intent"]) if header is not None else None,
        }
        async with self.engine.begin() as conn:
            if (await conn.execute(self._select(str(row["id"])))).first() is not None:
                raise ConflictError(f"a command {row['id']} already exists; seal a new one")
            await conn.execute(t.commands.insert().values(**row))
            stored = (await conn.execute(self._select(str(row["id"])))).one()
        await self.bus.route({"vault_id": vault_id, "frame": command_frame(stored)})
        return command_json(stored)

    def _select(self, command_id: str) -> Any:
        return sa.select(t.commands).where(t.commands.c.id == command_id)

    async def get(self, who: Principal, command_id: str) -> dict[str, Any]:
        """One command of the caller's organisation."""
        q = self._select(command_id).where(t.commands.c.org_id == who.org_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            raise NotFoundError(f"no command {command_id}")
        return command_json(row)

    async def list(
        self, who: Principal, vault_id: str, *, after: str | None, limit: int
    ) -> dict[str, Any]:
        """A vault's commands, oldest first, keyset-paginated by id (ids sort by time)."""
        await self.vaults.get_row(who.org_id, vault_id)
        c = t.commands
        q = sa.select(c).where(c.c.vault_id == vault_id, c.c.org_id == who.org_id)
        if after:
            q = q.where(c.c.id > after)
        q = q.order_by(c.c.id).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = list(await conn.execute(q))
        page = rows[:limit]
        return {
            "items": [command_json(r) for r in page],
            "next_cursor": page[-1].id if len(rows) > limit else None,
        }

    async def unfinished_frames(self, vault_id: str) -> builtins.list[dict[str, Any]]:
        """The ``command`` frames of a vault's pending and sent commands, oldest first."""
        if is_postgres(self.engine):
            return (await self.unfinished_of({vault_id: None}))[vault_id]
        c = t.commands
        q = (
            sa.select(c)
            .where(c.c.vault_id == vault_id, c.c.state.in_(UNFINISHED))
            .order_by(c.c.id)
            .limit(1000)
        )
        async with self.single.connect() as conn:
            return [command_frame(r) for r in await conn.execute(q)]

    async def unfinished_of(
        self, vault_ids: dict[str, None]
    ) -> dict[str, builtins.list[dict[str, Any]]]:
        """:meth:`unfinished_frames` of several vaults at once (the agents connecting at the same
        time, ``gateway/agent_link.py``); on PostgreSQL one statement on the driver's
        connection."""
        if not is_postgres(self.engine):
            return {vault_id: await self.unfinished_frames(vault_id) for vault_id in vault_ids}
        return await fetch_grouped(
            self.engine, _PG_UNFINISHED, vault_ids, "vault_id", command_frame
        )

    async def mark_sent(self, command_ids: builtins.list[str]) -> None:
        """pending → sent (a command already sent or finished is left alone)."""
        if not command_ids:
            return
        c = t.commands
        async with self.engine.begin() as conn:
            await conn.execute(
                c.update()
                .where(c.c.id.in_(command_ids), c.c.state == "pending")
                .values(state="sent", updated_at=self.clock())
            )

    async def finish(
        self, conn: Any, vault_id: str, result: dict[str, Any], now: datetime
    ) -> dict[str, Any] | None:
        """Record a ``command_result`` in the caller's transaction; the command's JSON the first
        time, None when it was already finished or is not this vault's."""
        c = t.commands
        state = "succeeded" if result["outcome"] == "ok" else "failed"
        message = (result.get("message") or "")[:MAX_RESULT] or None
        done = await conn.execute(
            c.update()
            .where(
                c.c.id == result["command_id"],
                c.c.vault_id == vault_id,
                c.c.state.in_(UNFINISHED),
            )
            .values(state=state, result=message, updated_at=now)
        )
        if done.rowcount != 1:
            return None
        row = (await conn.execute(self._select(result["command_id"]))).one()
        doc = command_json(row)
        for key in ("secret_id", "version"):
            if result.get(key) is not None:
                doc[key] = result[key]
        return doc
