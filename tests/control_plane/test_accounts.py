"""Accounts: login, me, logout, invitations, lock-out, sessions."""

from __future__ import annotations

from tests.control_plane.conftest import PASSWORD, Api


async def test_login_me_logout(api: Api) -> None:
    token = await api.org("Acme", "owner@acme.test")
    assert token.startswith("kvs_")
    status, me = await api.call("GET", "/me", token)
    assert status == 200
    assert me["user"]["email"] == "owner@acme.test" and me["user"]["role"] == "owner"
    assert me["org"]["name"] == "Acme"
    status, _ = await api.call("POST", "/auth/logout", token)
    assert status == 204
    status, body = await api.call("GET", "/me", token)
    assert status == 401 and body["error"]["code"] == "unauthenticated"


async def test_session_is_stored_hashed_and_expires(api: Api) -> None:
    import sqlalchemy as sa

    from control_plane import schema as t

    token = await api.org("Acme", "owner@acme.test")
    async with api.cp.engine.connect() as conn:
        rows = [r._mapping for r in await conn.execute(sa.select(t.sessions))]
    assert rows and all(token not in str(dict(r)) for r in rows)
    api.clock.advance(api.cp.settings.session_ttl_seconds + 1)
    status, _ = await api.call("GET", "/me", token)
    assert status == 401


async def test_wrong_password_and_lockout(api: Api) -> None:
    await api.org("Acme", "owner@acme.test")
    creds = {"email": "owner@acme.test", "password": "wrong password!!"}
    for _ in range(2):
        status, body = await api.call("POST", "/auth/login", json=creds)
        assert status == 401, body
    resp = await api.client.post("/api/v1/auth/login", json=creds)
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0
    assert (await resp.json())["error"]["code"] == "rate_limited"
    # even the right password is refused while locked out
    resp = await api.client.post(
        "/api/v1/auth/login", json={"email": "owner@acme.test", "password": PASSWORD}
    )
    assert resp.status == 429 and "Retry-After" in resp.headers
    # another account is not affected
    await api.cp.accounts.create_org("Other", "x@other.test", PASSWORD)
    assert await api.login("x@other.test")


async def test_invitation_flow_and_roles(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    viewer = await api.member(owner, "v@acme.test", "viewer")
    status, me = await api.call("GET", "/me", viewer)
    assert status == 200 and me["user"]["role"] == "viewer"
    # invitations are single use
    status, inv = await api.call(
        "POST", "/invitations", owner, json={"email": "o@acme.test", "role": "operator"}
    )
    assert status == 201
    ok = {"token": inv["token"], "password": PASSWORD}
    assert (await api.call("POST", "/invitations/accept", json=ok))[0] == 201
    assert (await api.call("POST", "/invitations/accept", json=ok))[0] == 404
    # an existing e-mail cannot be invited
    status, _ = await api.call(
        "POST", "/invitations", owner, json={"email": "v@acme.test", "role": "viewer"}
    )
    assert status == 409
    # an admin cannot invite an owner
    admin = await api.member(owner, "a@acme.test", "admin")
    status, _body = await api.call(
        "POST", "/invitations", admin, json={"email": "n@acme.test", "role": "owner"}
    )
    assert status == 400
    status, users = await api.call("GET", "/users", admin)
    assert status == 200 and len(users["items"]) == 4
    assert all("password" not in str(u) for u in users["items"])


async def test_bad_input_gets_json_errors(api: Api) -> None:
    cases = [
        ("POST", "/auth/login", {"data": b"not json"}),
        ("POST", "/auth/login", {"json": [1, 2]}),
        ("POST", "/auth/login", {"json": {"email": "a@b.c"}}),
        ("POST", "/auth/login", {"json": {"email": 3, "password": None}}),
        ("POST", "/auth/login", {"json": {"email": "a@b.c", "password": "x", "extra": 1}}),
        ("POST", "/auth/login", {"data": b"[" * 100 + b"]" * 100}),
        ("POST", "/invitations/accept", {"json": {"token": 1, "password": 2}}),
        (
            "POST",
            "/vaults/register",
            {"json": {"token": "x", "csr": "y", "name": "n", "agent_version": "1"}},
        ),
        ("GET", "/nope", {}),
        ("DELETE", "/health", {}),
    ]
    for method, path, kw in cases:
        status, body = await api.call(method, path, **kw)
        assert 400 <= status < 500, (path, status, body)
        assert set(body["error"]) >= {"code", "message"}, body


async def test_password_is_argon2id(api: Api) -> None:
    import sqlalchemy as sa

    from control_plane import schema as t

    await api.org("Acme", "owner@acme.test")
    async with api.cp.engine.connect() as conn:
        hashed = (await conn.execute(sa.select(t.users.c.password_hash))).scalar_one()
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed


async def test_logins_and_acceptances_are_audited(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    await api.call(
        "POST", "/auth/login", json={"email": "owner@acme.test", "password": "wrong password!!"}
    )
    await api.member(owner, "v@acme.test", "viewer")
    _, log = await api.call("GET", "/audit", owner)
    seen = [(e["action"], e["outcome"]) for e in log["items"]]
    assert ("auth.login", "ok") in seen and ("auth.login", "denied") in seen
    assert ("invitations.create", "ok") in seen and ("invitations.accept", "ok") in seen
    assert PASSWORD not in str(log) and "wrong password" not in str(log)
