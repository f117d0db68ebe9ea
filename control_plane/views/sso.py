"""Views: single sign-on configuration and logins with an ID token; thin over services.sso."""

from __future__ import annotations

from aiohttp import web

from control_plane.views.context import cp_of, target, who
from control_plane.views.source import client_source
from serverkit.body import json_object

FIELDS = frozenset(
    {"issuer", "client_id", "native_client_secret", "groups_claim", "role_map", "require_sso"}
)


async def put_sso(request: web.Request) -> web.Response:
    """PUT /org/sso {issuer, client_id, groups_claim?, role_map, require_sso?} (owner)."""
    doc = await json_object(request, set(FIELDS), frozenset({"issuer", "client_id", "role_map"}))
    me = who(request)
    target(request, me.org_id)
    return web.json_response(await cp_of(request).sso.configure(me, doc))


async def get_sso(request: web.Request) -> web.Response:
    """GET /org/sso (admin)."""
    return web.json_response(await cp_of(request).sso.config(who(request).org_id))


async def sso_public(request: web.Request) -> web.Response:
    """GET /auth/sso/{org_id} — issuer and client id to start the flow (no session)."""
    return web.json_response(await cp_of(request).sso.public(request.match_info["org_id"]))


async def sso_start(request: web.Request) -> web.Response:
    """POST /auth/sso/{org_id}/start — provider, client id, a login id and its nonce."""
    org_id = request.match_info["org_id"]
    return web.json_response(await cp_of(request).sso.start(org_id, client_source(request)))


async def sso_login(request: web.Request) -> web.Response:
    """POST /auth/sso {org_id, id_token, login_id} → a session token."""
    names = frozenset({"org_id", "id_token", "login_id"})
    doc = await json_object(request, set(names), names)
    result = await cp_of(request).sso.login(
        doc["org_id"], doc["id_token"], doc["login_id"], client_source(request)
    )
    return web.json_response(result)
