"""Views: user management (roles, removal, passwords, sessions); thin over services.users."""

from __future__ import annotations

from aiohttp import web

from control_plane.views.context import cp_of, target, who
from control_plane.views.source import client_source
from serverkit.body import json_object


def _user(request: web.Request) -> str:
    return target(request, request.match_info["user_id"])


async def set_role(request: web.Request) -> web.Response:
    """PUT /users/{user_id}/role {role}."""
    doc = await json_object(request, {"role"}, frozenset({"role"}))
    users = cp_of(request).users
    return web.json_response(await users.set_role(who(request), _user(request), doc["role"]))


async def remove_user(request: web.Request) -> web.Response:
    """DELETE /users/{user_id}."""
    await cp_of(request).users.remove(who(request), _user(request))
    return web.Response(status=204)


async def reset_password(request: web.Request) -> web.Response:
    """POST /users/{user_id}/password-reset → a single-use reset token (shown once)."""
    result = await cp_of(request).users.reset_password(who(request), _user(request))
    return web.json_response(result, status=201)


async def complete_reset(request: web.Request) -> web.Response:
    """POST /password-resets/complete {token, password} (no session)."""
    doc = await json_object(request, {"token", "password"}, frozenset({"token", "password"}))
    await cp_of(request).users.complete_reset(doc["token"], doc["password"], client_source(request))
    return web.Response(status=204)


async def change_password(request: web.Request) -> web.Response:
    """PUT /me/password {current_password, new_password}; other sessions end."""
    fields = frozenset({"current_password", "new_password"})
    doc = await json_object(request, set(fields), fields)
    me = who(request)
    target(request, me.user_id)
    ended = await cp_of(request).users.change_password(
        me, doc["current_password"], doc["new_password"], client_source(request)
    )
    return web.json_response({"sessions_ended": ended})


async def list_sessions(request: web.Request) -> web.Response:
    """GET /users/{user_id}/sessions."""
    items = await cp_of(request).users.list_sessions(who(request), _user(request))
    return web.json_response({"items": items})


async def end_sessions(request: web.Request) -> web.Response:
    """DELETE /users/{user_id}/sessions — end them all."""
    return web.json_response(await cp_of(request).users.end_sessions(who(request), _user(request)))


async def end_session(request: web.Request) -> web.Response:
    """DELETE /users/{user_id}/sessions/{session_id} — end one."""
    session_id = request.match_info["session_id"]
    result = await cp_of(request).users.end_sessions(who(request), _user(request), session_id)
    return web.json_response(result)


async def my_sessions(request: web.Request) -> web.Response:
    """GET /me/sessions."""
    me = who(request)
    return web.json_response({"items": await cp_of(request).users.list_sessions(me, me.user_id)})


async def end_my_session(request: web.Request) -> web.Response:
    """DELETE /me/sessions/{session_id} — end one of your own sessions."""
    me = who(request)
    session_id = target(request, request.match_info["session_id"])
    return web.json_response(await cp_of(request).users.end_sessions(me, me.user_id, session_id))


async def end_my_sessions(request: web.Request) -> web.Response:
    """DELETE /me/sessions — end every session of yours (this one too)."""
    me = who(request)
    return web.json_response(await cp_of(request).users.end_sessions(me, me.user_id))
