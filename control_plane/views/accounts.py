"""Views: login, logout, me, users, invitations, the organisation's metadata key."""

from __future__ import annotations

from aiohttp import web

from control_plane.views.context import cp_of, target, who
from control_plane.views.source import client_source
from serverkit.body import json_object


async def login(request: web.Request) -> web.Response:
    """POST /auth/login {email, password} → a session token."""
    doc = await json_object(request, {"email", "password"}, frozenset({"email", "password"}))
    result = await cp_of(request).accounts.login(
        doc["email"], doc["password"], client_source(request)
    )
    return web.json_response(result)


async def logout(request: web.Request) -> web.Response:
    """POST /auth/logout — revoke the caller's session."""
    await cp_of(request).accounts.logout(who(request))
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    """GET /me — the caller and their organisation."""
    return web.json_response(await cp_of(request).accounts.me(who(request)))


async def list_users(request: web.Request) -> web.Response:
    """GET /users — the organisation's users."""
    return web.json_response({"items": await cp_of(request).accounts.list_users(who(request))})


async def create_invitation(request: web.Request) -> web.Response:
    """POST /invitations {email, role} → an invitation token (shown once)."""
    doc = await json_object(request, {"email", "role"}, frozenset({"email", "role"}))
    result = await cp_of(request).accounts.invite(who(request), doc["email"], doc["role"])
    target(request, result["id"])
    return web.json_response(result, status=201)


async def accept_invitation(request: web.Request) -> web.Response:
    """POST /invitations/accept {token, password} → the new user."""
    doc = await json_object(request, {"token", "password"}, frozenset({"token", "password"}))
    user = await cp_of(request).accounts.accept(
        doc["token"], doc["password"], client_source(request)
    )
    return web.json_response(user, status=201)


async def put_metadata_key(request: web.Request) -> web.Response:
    """PUT /org/metadata-key {fingerprint}."""
    doc = await json_object(request, {"fingerprint"}, frozenset({"fingerprint"}))
    return web.json_response(
        await cp_of(request).accounts.set_metadata_key(who(request), doc["fingerprint"])
    )
