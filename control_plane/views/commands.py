"""Views: commands to vault agents, and a vault's reported inventory."""

from __future__ import annotations

from aiohttp import web

from control_plane.services.commands import FIELDS
from control_plane.views.context import cp_of, target, who
from serverkit.body import json_object, query, query_int


async def create_command(request: web.Request) -> web.Response:
    """POST /vaults/{vault_id}/commands {intent} (or legacy {command, args}) → 202."""
    vault_id = target(request, request.match_info["vault_id"])
    doc = await json_object(request, FIELDS)
    command = await cp_of(request).commands.create(who(request), vault_id, doc)
    return web.json_response(command, status=202)


async def list_commands(request: web.Request) -> web.Response:
    """GET /vaults/{vault_id}/commands?limit=&cursor= — oldest first."""
    vault_id = target(request, request.match_info["vault_id"])
    q = query(request, {"limit", "cursor"})
    limit = query_int(q, "limit", 100, 1, 500)
    page = await cp_of(request).commands.list(
        who(request), vault_id, after=q.get("cursor"), limit=limit
    )
    return web.json_response(page)


async def get_command(request: web.Request) -> web.Response:
    """GET /commands/{command_id}."""
    command_id = target(request, request.match_info["command_id"])
    return web.json_response(await cp_of(request).commands.get(who(request), command_id))


async def list_inventory(request: web.Request) -> web.Response:
    """GET /vaults/{vault_id}/inventory?limit=&cursor= — by secret id."""
    vault_id = target(request, request.match_info["vault_id"])
    q = query(request, {"limit", "cursor"})
    limit = query_int(q, "limit", 100, 1, 500)
    page = await cp_of(request).inventory.list(
        who(request), vault_id, after=q.get("cursor"), limit=limit
    )
    return web.json_response(page)
