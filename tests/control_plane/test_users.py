"""User management: the role × action × own/other organisation matrix, the rules (rank, last
owner), passwords, sessions, audit and live events. Embedded and production."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.control_plane.conftest import PASSWORD, Api
from tests.control_plane.test_stream import next_event

NEW_PASSWORD = "a brand new passphrase"


@dataclass
class Orgs:
    """Two organisations: ``tokens`` of A's owner/admin/operator/viewer; B's owner."""

    tokens: dict[str, str]
    other_owner: str
    counter: int = 0


async def setup_orgs(api: Api) -> Orgs:
    """Org A with one user per role, org B with its owner."""
    owner = await api.org("Acme", "owner@acme.test")
    tokens = {"owner": owner}
    for role in ("admin", "operator", "viewer"):
        tokens[role] = await api.member(owner, f"{role}@acme.test", role)
    return Orgs(tokens, await api.org("Other", "owner@other.test"))


async def new_target(api: Api, orgs: Orgs, other: bool) -> tuple[str, str, str]:
    """A fresh viewer in org A (or B) with a live session: (user id, session id, token)."""
    orgs.counter += 1
    email = f"target{orgs.counter}@{'other' if other else 'acme'}.test"
    inviter = orgs.other_owner if other else orgs.tokens["owner"]
    token = await api.member(inviter, email, "viewer")
    status, me = await api.call("GET", "/me/sessions", token)
    assert status == 200
    (session,) = me["items"]
    return session["user_id"], session["id"], token


Action = Callable[[Api, str, str, str], Awaitable[tuple[int, Any]]]


def _action(method: str, path: str, body: dict[str, Any] | None = None) -> Action:
    async def call(api: Api, token: str, user: str, session: str) -> tuple[int, Any]:
        route = path.format(user=user, session=session)
        kw = {"json": body} if body is not None else {}
        return await api.call(method, route, token, **kw)

    return call


ACTIONS: dict[str, tuple[Action, int]] = {
    "set role": (_action("PUT", "/users/{user}/role", {"role": "operator"}), 200),
    "remove": (_action("DELETE", "/users/{user}"), 204),
    "reset password": (_action("POST", "/users/{user}/password-reset"), 201),
    "list sessions": (_action("GET", "/users/{user}/sessions"), 200),
    "end sessions": (_action("DELETE", "/users/{user}/sessions"), 200),
    "end one session": (_action("DELETE", "/users/{user}/sessions/{session}"), 200),
}


async def target_state(api: Api, user: str, token: str) -> tuple[str | None, int]:
    """(the target's role or None when removed, status of a call with its session)."""
    import sqlalchemy as sa

    from control_plane import schema as t

    async with api.cp.engine.connect() as conn:
        role = (await conn.execute(sa.select(t.users.c.role).where(t.users.c.id == user))).scalar()
    status, _ = await api.call("GET", "/me", token)
    return role, status


@pytest.mark.parametrize("role", ["viewer", "operator", "admin", "owner"])
async def test_matrix_role_by_action_by_organisation(api: Api, role: str) -> None:
    orgs = await setup_orgs(api)
    caller = orgs.tokens[role]
    may = role in ("admin", "owner")
    for name, (act, ok) in ACTIONS.items():
        for other in (False, True):
            user, session, token = await new_target(api, orgs, other)
            before = await target_state(api, user, token)
            status, body = await act(api, caller, user, session)
            expected = (404 if other else ok) if may else 403
            assert status == expected, (role, name, other, status, body)
            after = await target_state(api, user, token)
            if status != ok:
                assert after == before == ("viewer", 200), (role, name, other)  # nothing changed
                continue
            changed = {
                "set role": ("operator", 200),
                "remove": (None, 401),
                "reset password": ("viewer", 401),
                "list sessions": ("viewer", 200),
                "end sessions": ("viewer", 401),
                "end one session": ("viewer", 401),
            }[name]
            assert after == changed, (name, after)
    # listing and inviting never reach another organisation
    status, listed = await api.call("GET", "/users", caller)
    if may:
        assert status == 200 and all(u["email"].endswith("@acme.test") for u in listed["items"])
    else:
        assert status == 403


async def test_nobody_acts_above_their_rank(api: Api) -> None:
    orgs = await setup_orgs(api)
    admin, owner = orgs.tokens["admin"], orgs.tokens["owner"]
    status, users = await api.call("GET", "/users", owner)
    ids = {u["email"].split("@")[0]: u["id"] for u in users["items"]}
    for method, path, body in (
        ("PUT", f"/users/{ids['owner']}/role", {"role": "viewer"}),
        ("DELETE", f"/users/{ids['owner']}", None),
        ("POST", f"/users/{ids['owner']}/password-reset", None),
        ("DELETE", f"/users/{ids['owner']}/sessions", None),
        ("PUT", f"/users/{ids['viewer']}/role", {"role": "owner"}),  # above the admin's own
    ):
        status, err = await api.call(method, path, admin, **({"json": body} if body else {}))
        assert status == 403 and err["error"]["code"] == "forbidden", (path, err)
    assert (await api.call("GET", "/me", owner))[0] == 200


async def test_last_owner_is_protected(api: Api) -> None:
    orgs = await setup_orgs(api)
    owner = orgs.tokens["owner"]
    _, users = await api.call("GET", "/users", owner)
    ids = {u["email"].split("@")[0]: u["id"] for u in users["items"]}
    for method, path, body in (
        ("PUT", f"/users/{ids['owner']}/role", {"role": "admin"}),
        ("DELETE", f"/users/{ids['owner']}", None),
    ):
        status, err = await api.call(method, path, owner, **({"json": body} if body else {}))
        assert status == 409 and "last owner" in err["error"]["message"]
    # with a second owner, one may step down; then the other is the last again
    status, _ = await api.call("PUT", f"/users/{ids['admin']}/role", owner, json={"role": "owner"})
    assert status == 200
    # both owners demote each other at once: exactly one succeeds
    second = orgs.tokens["admin"]
    results = await asyncio.gather(
        api.call("PUT", f"/users/{ids['admin']}/role", owner, json={"role": "admin"}),
        api.call("PUT", f"/users/{ids['owner']}/role", second, json={"role": "admin"}),
    )
    statuses = sorted(s for s, _ in results)
    # one wins; the other finds itself the last owner (409) or already demoted (403)
    assert statuses[0] == 200 and statuses[1] in (403, 409), results
    _, users = await api.call("GET", "/users", second)
    assert sum(u["role"] == "owner" for u in users["items"]) == 1


async def test_reset_and_change_password(api: Api) -> None:
    orgs = await setup_orgs(api)
    owner, viewer = orgs.tokens["owner"], orgs.tokens["viewer"]
    _, users = await api.call("GET", "/users", owner)
    vid = next(u["id"] for u in users["items"] if u["email"] == "viewer@acme.test")
    status, reset = await api.call("POST", f"/users/{vid}/password-reset", owner)
    assert status == 201 and reset["token"].startswith("kvr_")
    assert (await api.call("GET", "/me", viewer))[0] == 401  # sessions ended
    creds = {"email": "viewer@acme.test", "password": PASSWORD}
    assert (await api.call("POST", "/auth/login", json=creds))[0] == 401  # old password locked
    hashed = api.cp.accounts.passwords.hashed
    bogus = {"token": "kvr_" + "x" * 43, "password": NEW_PASSWORD}
    assert (await api.call("POST", "/password-resets/complete", json=bogus))[0] == 404
    assert api.cp.accounts.passwords.hashed == hashed  # a bogus token costs no hashing
    done = {"token": reset["token"], "password": NEW_PASSWORD}
    assert (await api.call("POST", "/password-resets/complete", json=done))[0] == 204
    assert (await api.call("POST", "/password-resets/complete", json=done))[0] == 404  # once
    token = await api.login("viewer@acme.test", NEW_PASSWORD)
    other_session = await api.login("viewer@acme.test", NEW_PASSWORD)
    # change your own password: the current one is checked, other sessions end
    wrong = {"current_password": "not my password", "new_password": PASSWORD}
    assert (await api.call("PUT", "/me/password", token, json=wrong))[0] == 401
    right = {"current_password": NEW_PASSWORD, "new_password": PASSWORD}
    status, body = await api.call("PUT", "/me/password", token, json=right)
    assert status == 200 and body["sessions_ended"] == 1
    assert (await api.call("GET", "/me", token))[0] == 200
    assert (await api.call("GET", "/me", other_session))[0] == 401
    assert await api.login("viewer@acme.test", PASSWORD)
    too_short = {"current_password": PASSWORD, "new_password": "short"}
    status, err = await api.call("PUT", "/me/password", token, json=too_short)
    assert status == 400 and "12" in err["error"]["message"]


async def test_own_sessions_listed_and_ended(api: Api) -> None:
    orgs = await setup_orgs(api)
    first = orgs.tokens["viewer"]
    second = await api.login("viewer@acme.test")
    status, mine = await api.call("GET", "/me/sessions", first)
    assert status == 200 and len(mine["items"]) == 2
    assert sum(s["current"] for s in mine["items"]) == 1
    other = next(s["id"] for s in mine["items"] if not s["current"])
    status, body = await api.call("DELETE", f"/me/sessions/{other}", first)
    assert status == 200 and body == {"ended": 1}
    assert (await api.call("GET", "/me", second))[0] == 401
    # someone else's session id is not yours: 404, nothing ends
    status, owners = await api.call("GET", "/me/sessions", orgs.tokens["owner"])
    theirs = owners["items"][0]["id"]
    assert (await api.call("DELETE", f"/me/sessions/{theirs}", first))[0] == 404
    assert (await api.call("GET", "/me", orgs.tokens["owner"]))[0] == 200
    status, body = await api.call("DELETE", "/me/sessions", first)
    assert status == 200 and body == {"ended": 1}
    assert (await api.call("GET", "/me", first))[0] == 401


async def test_changes_are_audited_and_pushed_live(api: Api) -> None:
    orgs = await setup_orgs(api)
    owner = orgs.tokens["owner"]
    ws = await api.client.ws_connect("/api/v1/stream", headers={"Authorization": f"Bearer {owner}"})
    await next_event(ws, "hello")
    _, users = await api.call("GET", "/users", owner)
    ids = {u["email"].split("@")[0]: u["id"] for u in users["items"]}
    await api.call("PUT", f"/users/{ids['viewer']}/role", owner, json={"role": "operator"})
    event = await next_event(ws, "user.changed")
    assert event["data"] == {"user_id": ids["viewer"], "role": "operator"}  # no e-mail
    await api.call("DELETE", f"/users/{ids['operator']}/sessions", owner)
    event = await next_event(ws, "user.sessions_ended")
    assert event["data"] == {"user_id": ids["operator"], "count": 1}
    await api.call("DELETE", f"/users/{ids['operator']}", owner)
    assert (await next_event(ws, "user.removed"))["data"] == {"user_id": ids["operator"]}
    await ws.close()
    status, audit = await api.call("GET", "/audit", owner, params={"limit": "500"})
    assert status == 200
    seen = {(e["action"], e.get("target")) for e in audit["items"]}
    assert ("users.role", ids["viewer"]) in seen
    assert ("users.sessions_end", ids["operator"]) in seen
    assert ("users.remove", ids["operator"]) in seen
