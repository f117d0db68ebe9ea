"""Views: rotation policies CRUD (sealed intents, or plaintext fields from before)."""

from __future__ import annotations

from aiohttp import web

from control_plane.services.policy_rules import FIELDS
from control_plane.views.context import cp_of, target, who
from serverkit.body import json_object


async def create_policy(request: web.Request) -> web.Response:
    """POST /policies."""
    doc = await json_object(request, FIELDS)
    policy = await cp_of(request).policies.create(who(request), doc)
    target(request, policy["id"])
    return web.json_response(policy, status=201)


async def list_policies(request: web.Request) -> web.Response:
    """GET /policies."""
    return web.json_response({"items": await cp_of(request).policies.list(who(request))})


async def get_policy(request: web.Request) -> web.Response:
    """GET /policies/{policy_id}."""
    policy_id = target(request, request.match_info["policy_id"])
    return web.json_response(await cp_of(request).policies.get(who(request), policy_id))


async def update_policy(request: web.Request) -> web.Response:
    """PUT /policies/{policy_id} — any subset of the fields."""
    policy_id = target(request, request.match_info["policy_id"])
    doc = await json_object(request, FIELDS)
    return web.json_response(await cp_of(request).policies.update(who(request), policy_id, doc))


async def delete_policy(request: web.Request) -> web.Response:
    """DELETE /policies/{policy_id} — with ``{"intent": …}`` (a sealed deletion) for a sealed
    policy, without a body for a plaintext one."""
    policy_id = target(request, request.match_info["policy_id"])
    doc = (
        await json_object(request, {"intent"}, frozenset({"intent"}))
        if request.can_read_body
        else None
    )
    await cp_of(request).policies.delete(who(request), policy_id, doc)
    return web.Response(status=204)
