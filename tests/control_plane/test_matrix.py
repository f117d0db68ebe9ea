"""Every endpoint × every role × own/foreign organisation: allow/deny as documented, no leaks.

A 403 depends only on (role, route), never on the object, so it reveals nothing; a role that
may use a route gets 404 for another organisation's object and never sees its data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from control_plane.routes import LEAST_ROLE, ROUTES
from control_plane.services.principal import RANK, ROLES
from tests.control_plane.conftest import Api
from tests.control_plane.test_policies_alerts import POLICY, new_vault

Maker = Callable[[Api, dict[str, Any]], Awaitable[str]]


async def make_vault(api: Api, org: dict[str, Any]) -> str:
    return await new_vault(api, org["owner"], f"v{len(org['made'])}")


async def make_policy(api: Api, org: dict[str, Any]) -> str:
    doc = {**POLICY, "name": f"p{len(org['made'])}"}
    status, body = await api.call("POST", "/policies", org["owner"], json=doc)
    assert status == 201
    return str(body["id"])


async def make_alert(api: Api, org: dict[str, Any]) -> str:
    alert, _ = await api.cp.alerts.raise_alert(
        org["id"], "rotation_failed", f"k{len(org['made'])}", "rotation failed"
    )
    return str(alert["id"])


async def make_token(api: Api, org: dict[str, Any]) -> str:
    status, body = await api.call("POST", "/enrollment-tokens", org["owner"], json={})
    assert status == 201
    return str(body["id"])


async def make_command(api: Api, org: dict[str, Any]) -> str:
    vault_id = await make_vault(api, org)
    status, body = await api.call(
        "POST", f"/vaults/{vault_id}/commands", org["owner"], json={"command": "resync"}
    )
    assert status == 202, body
    return str(body["id"])


async def make_user(api: Api, org: dict[str, Any]) -> str:
    n = len(org["made"])
    email = f"made{n}@{org['id'].lower()}.test"
    await api.member(org["owner"], email, "viewer")
    _, users = await api.call("GET", "/users", org["owner"])
    return str(next(u["id"] for u in users["items"] if u["email"] == email))


async def make_user_session(api: Api, org: dict[str, Any]) -> str:
    user = await make_user(api, org)
    status, sessions = await api.call("GET", f"/users/{user}/sessions", org["owner"])
    assert status == 200, sessions
    return f"{user}/sessions/{sessions['items'][0]['id']}"


# route name → (path with {id}, object maker or None, body, success status)
CASES: dict[str, tuple[str, Maker | None, Any, int]] = {
    "me.get": ("/me", None, None, 200),
    "users.list": ("/users", None, None, 200),
    "invitations.create": ("/invitations", None, "invite", 201),
    "org.metadata_key": ("/org/metadata-key", None, {"fingerprint": "sha256:" + "a" * 64}, 200),
    "enrollment.create": ("/enrollment-tokens", None, {}, 201),
    "enrollment.list": ("/enrollment-tokens", None, None, 200),
    "enrollment.revoke": ("/enrollment-tokens/{id}", make_token, None, 200),
    "vaults.list": ("/vaults", None, None, 200),
    "vaults.get": ("/vaults/{id}", make_vault, None, 200),
    "vaults.revoke": ("/vaults/{id}/revoke", make_vault, None, 200),
    "vaults.inventory": ("/vaults/{id}/inventory", make_vault, None, 200),
    "commands.create": (
        "/vaults/{id}/commands",
        make_vault,
        {"command": "rotate", "args": {"secret_id": "sec_1"}},
        202,
    ),
    "commands.list": ("/vaults/{id}/commands", make_vault, None, 200),
    "commands.get": ("/commands/{id}", make_command, None, 200),
    "ca.get": ("/ca", None, None, 200),
    "ca.crl": ("/ca/crl", None, None, 200),
    "policies.create": ("/policies", None, "policy", 201),
    "policies.list": ("/policies", None, None, 200),
    "policies.get": ("/policies/{id}", make_policy, None, 200),
    "policies.update": ("/policies/{id}", make_policy, {"interval_seconds": 7200}, 200),
    "policies.delete": ("/policies/{id}", make_policy, None, 204),
    "alerts.list": ("/alerts", None, None, 200),
    "alerts.ack": ("/alerts/{id}/acknowledge", make_alert, None, 200),
    "alerts.resolve": ("/alerts/{id}/resolve", make_alert, None, 200),
    "audit.query": ("/audit", None, None, 200),
    "users.role": ("/users/{id}/role", make_user, {"role": "viewer"}, 200),
    "users.remove": ("/users/{id}", make_user, None, 204),
    "users.reset": ("/users/{id}/password-reset", make_user, None, 201),
    "users.sessions": ("/users/{id}/sessions", make_user, None, 200),
    "users.sessions_end": ("/users/{id}/sessions", make_user, None, 200),
    "users.session_end": ("/users/{id}", make_user_session, None, 200),
    "me.sessions": ("/me/sessions", None, None, 200),
    "org.sso_set": (
        "/org/sso",
        None,
        # a public address (loopback is refused by default); configuring fetches nothing
        {"issuer": "https://9.9.9.9", "client_id": "kv", "role_map": {"ops": "operator"}},
        200,
    ),
    "org.sso": ("/org/sso", None, None, 200),
    "analytics.usage": ("/analytics/usage", None, None, 200),
}


async def _org(api: Api, name: str) -> dict[str, Any]:
    owner = await api.org(name, f"owner@{name}.test")
    tokens = {"owner": owner}
    for role in ("admin", "operator", "viewer"):
        tokens[role] = await api.member(owner, f"{role}@{name}.test", role)
    me = (await api.call("GET", "/me", owner))[1]
    return {"id": me["org"]["id"], "owner": owner, "tokens": tokens, "made": []}


def _body(kind: Any, n: int) -> Any:
    if kind == "invite":
        return {"email": f"new{n}@x.test", "role": "viewer"}
    if kind == "policy":
        return {**POLICY, "name": f"new{n}"}
    return kind


def test_every_protected_route_is_in_the_matrix() -> None:
    # ending your own sessions or changing your password would log the matrix's callers out:
    # those are covered by tests/control_plane/test_users.py
    own = {"auth.logout", "me.password", "me.sessions_end", "me.session_end"}
    protected = {name for *_, name, role in ROUTES if role is not None} - own
    assert protected == set(CASES)


async def test_role_matrix_own_and_foreign(api: Api) -> None:
    own, foreign = await _org(api, "acme"), await _org(api, "globex")
    foreign_ids: dict[str, str] = {}
    for name, (_, maker, _, _) in CASES.items():
        if maker is not None:
            foreign_ids[name] = await maker(api, foreign)
            foreign["made"].append(foreign_ids[name])
    method_of = {name: method for method, _, _, name, _ in ROUTES}
    n = 0
    for name, (path, maker, body, ok) in CASES.items():
        method = method_of[name]
        for role in ROLES:
            n += 1
            allowed = RANK[role] >= RANK[LEAST_ROLE[name] or "viewer"]
            token = own["tokens"][role]
            kw = {"json": _body(body, n)} if body is not None else {}
            # own organisation
            own_path = path
            if maker is not None:
                own_path = path.format(id=await maker(api, own))
                own["made"].append(own_path)
            status, resp = await api.call(method, own_path, token, **kw)
            assert status == (ok if allowed else 403), (name, role, status, resp)
            # another organisation's object
            if maker is not None:
                status, resp = await api.call(
                    method, path.format(id=foreign_ids[name]), token, **kw
                )
                assert status == (404 if allowed else 403), (name, role, "foreign", status, resp)
                assert set(resp) == {"error"}, resp
            # nothing of the other organisation ever shows
            if status < 400 and method == "GET":
                text = str(resp)
                assert foreign["id"] not in text, (name, role)
                leaked = [i for i in foreign_ids.values() if i in text]
                assert not leaked, (name, role, leaked)
    # the foreign objects are untouched
    status, pols = await api.call("GET", "/policies", foreign["owner"])
    assert {p["id"] for p in pols["items"]} >= {foreign_ids["policies.get"]}
    status, alerts = await api.call("GET", "/alerts?state=open", foreign["owner"])
    assert {a["id"] for a in alerts["items"]} >= {foreign_ids["alerts.ack"]}


async def test_unauthenticated_gets_401_everywhere(api: Api) -> None:
    for method, path, _, name, role in ROUTES:
        if role is None:
            continue
        url = path.replace("{", "").replace("}", "")
        for headers in ({}, {"Authorization": "Bearer kvs_forged"}, {"Authorization": "Basic x"}):
            status, body = await api.call(method, url, headers=headers)
            assert status == 401, (name, status, body)
            assert body["error"]["code"] == "unauthenticated"
