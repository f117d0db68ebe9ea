"""Policies CRUD, the alert engine and offline sweep, audit log and usage analytics."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from aiohttp import web

from common.pki import make_csr
from tests.control_plane.conftest import Api
from tests.control_plane.test_vaults import enroll_token, register

POLICY = {
    "name": "db-passwords",
    "selector": {"labels": {"team": "db"}, "name_glob": "db/*"},
    "interval_seconds": 86400,
    "notice_seconds": 3600,
    "rotator": {"type": "random", "settings": {"length": 32, "alphabet": "alnum"}},
    "scope": "all",
}


async def new_vault(api: Api, owner: str, name: str = "v1") -> str:
    """Enroll a vault; returns its id."""
    token = await enroll_token(api, owner)
    status, ident = await register(api, token, make_csr("x")[0], name)
    assert status in (200, 201)
    return str(ident["vault_id"])


async def test_policy_crud(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    status, pol = await api.call("POST", "/policies", owner, json=POLICY)
    assert status == 201, pol
    assert pol["version"] == 1 and pol["scope"] == {"all": True}
    assert (await api.call("POST", "/policies", owner, json=POLICY))[0] == 409
    status, got = await api.call("GET", f"/policies/{pol['id']}", owner)
    assert got == pol
    vault_id = await new_vault(api, owner)
    status, upd = await api.call(
        "PUT",
        f"/policies/{pol['id']}",
        owner,
        json={"interval_seconds": 7200, "scope": {"vault_ids": [vault_id]}},
    )
    assert status == 200 and upd["version"] == 2 and upd["interval_seconds"] == 7200
    assert upd["scope"] == {"vault_ids": [vault_id]} and upd["selector"] == POLICY["selector"]
    _, listing = await api.call("GET", "/policies", owner)
    assert [p["id"] for p in listing["items"]] == [pol["id"]]
    assert (await api.call("DELETE", f"/policies/{pol['id']}", owner))[0] == 204
    assert (await api.call("GET", f"/policies/{pol['id']}", owner))[0] == 404


async def test_policy_validation(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    bad: list[dict[str, Any]] = [
        {k: v for k, v in POLICY.items() if k != "rotator"},
        {**POLICY, "interval_seconds": "daily"},
        {**POLICY, "interval_seconds": True},
        {**POLICY, "rotator": {"type": "magic"}},
        {**POLICY, "rotator": {"type": "postgres", "settings": {"password": "hunter2"}}},
        {**POLICY, "rotator": {"type": "postgres", "settings": {"dsn": "postgres://u:p@h"}}},
        {**POLICY, "rotator": {"type": "postgres", "settings": {"connection_string": "x"}}},
        {**POLICY, "rotator": {"type": "postgres", "settings": {"conninfo": "host=h"}}},
        {**POLICY, "selector": {}},
        {**POLICY, "scope": {"vault_ids": []}},
        {**POLICY, "extra": 1},
    ]
    for doc in bad:
        status, body = await api.call("POST", "/policies", owner, json=doc)
        assert status == 400, (doc, body)
    assert (await api.call("PUT", "/policies/pol_x", owner, json={}))[0] in (400, 404)
    # a postgres rotator names a connection defined on the agent: the name itself is fine
    named = {"type": "postgres", "settings": {"connection": "billing", "role": "app"}}
    status, body = await api.call("POST", "/policies", owner, json={**POLICY, "rotator": named})
    assert status == 201, body


async def test_alert_engine_dedupes_and_moves_states(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    me = (await api.call("GET", "/me", owner))[1]
    org = me["org"]["id"]
    a1, new1 = await api.cp.alerts.raise_alert(org, "rotation_failed", "rot:1", "rotation failed")
    a2, new2 = await api.cp.alerts.raise_alert(org, "rotation_failed", "rot:1", "again")
    assert new1 and not new2 and a1["id"] == a2["id"]
    status, ack = await api.call("POST", f"/alerts/{a1['id']}/acknowledge", owner)
    assert status == 200 and ack["state"] == "acknowledged"
    assert (await api.call("POST", f"/alerts/{a1['id']}/acknowledge", owner))[0] == 409
    status, res = await api.call("POST", f"/alerts/{a1['id']}/resolve", owner)
    assert status == 200 and res["state"] == "resolved"
    assert (await api.call("POST", f"/alerts/{a1['id']}/resolve", owner))[0] == 409
    a3, new3 = await api.cp.alerts.raise_alert(org, "rotation_failed", "rot:1", "third")
    assert new3 and a3["id"] != a1["id"]
    _, open_ = await api.call("GET", "/alerts?state=open", owner)
    assert [a["id"] for a in open_["items"]] == [a3["id"]]
    _, every = await api.call("GET", "/alerts", owner)
    assert len(every["items"]) == 2
    assert (await api.call("GET", "/alerts?state=bogus", owner))[0] == 400


async def test_offline_sweep_raises_and_resolves(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    vid = await new_vault(api, owner)
    await api.cp.vaults.heartbeat(vid)
    assert await api.cp.vaults.sweep_offline() == 0
    api.clock.advance(api.cp.settings.offline_after_seconds + 5)
    assert await api.cp.vaults.sweep_offline() == 1
    assert await api.cp.vaults.sweep_offline() == 0
    _, alerts = await api.call("GET", "/alerts?state=open", owner)
    assert [(a["kind"], a["vault_id"]) for a in alerts["items"]] == [("vault_offline", vid)]
    await api.cp.vaults.heartbeat(vid)
    _, alerts = await api.call("GET", "/alerts?state=resolved", owner)
    assert len(alerts["items"]) == 1 and alerts["items"][0]["resolved_by"] == "system"


async def test_webhook_signed(
    aiohttp_server: Any, aiohttp_client: Any, settings_factory: Any
) -> None:
    from control_plane.app import build_app
    from control_plane.services.alerts import SIGNATURE_HEADER
    from control_plane.views.context import CP

    received: list[tuple[bytes, str]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response(text="ok")

    hook_app = web.Application()
    hook_app.router.add_post("/hook", hook)
    server = await aiohttp_server(hook_app)
    settings = settings_factory(webhook_url=str(server.make_url("/hook")), webhook_secret="s3cr3t")
    app = build_app(settings)
    await aiohttp_client(app)
    cp = app[CP]
    org = (await cp.accounts.create_org("Acme", "o@acme.test", "correct horse battery"))["org_id"]
    await cp.alerts.raise_alert(org, "integrity_failure", "int:1", "integrity failure on v1")
    await cp.alerts.raise_alert(org, "integrity_failure", "int:1", "dup")
    for _ in range(100):
        if received:
            break
        import asyncio

        await asyncio.sleep(0.02)
    assert len(received) == 1
    body, sig = received[0]
    assert json.loads(body)["text"].endswith("integrity failure on v1")
    assert sig == "sha256=" + hmac.new(b"s3cr3t", body, hashlib.sha256).hexdigest()


async def test_audit_and_usage(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    v1 = await new_vault(api, owner, "v1")
    v2 = await new_vault(api, owner, "v2")
    events = [
        {
            "event_id": f"e{i}",
            "op": "secrets.read",
            "outcome": "ok",
            "at": f"2026-03-0{1 + i % 2}T10:00:00Z",
            "actor": "tok_1",
            "secret_id": "sec_abc",
        }
        for i in range(6)
    ]
    assert await api.cp.audit.ingest(v1, events) == {"accepted": 6, "duplicates": 0}
    assert await api.cp.audit.ingest(v1, events) == {"accepted": 0, "duplicates": 6}
    await api.cp.audit.ingest(
        v2, [{"event_id": "e0", "op": "secrets.create", "at": "2026-03-02T11:00:00Z"}]
    )
    status, usage = await api.call("GET", "/analytics/usage?from=2026-03-01&to=2026-03-31", owner)
    assert status == 200, usage
    rows = {(r["day"], r["vault_id"], r["operation"]): r["count"] for r in usage["rows"]}
    assert rows == {
        ("2026-03-01", v1, "secrets.read"): 3,
        ("2026-03-02", v1, "secrets.read"): 3,
        ("2026-03-02", v2, "secrets.create"): 1,
    }
    _, only = await api.call(
        "GET", f"/analytics/usage?from=2026-03-02&to=2026-03-02&vault_id={v2}", owner
    )
    assert only["total"] == 1
    assert (await api.call("GET", "/analytics/usage?from=2026-13-01", owner))[0] == 400
    assert (await api.call("GET", "/analytics/usage?from=2026-03-05&to=2026-03-01", owner))[
        0
    ] == 400
    # the audit log has the agents' events and the operators' changes
    status, log = await api.call("GET", "/audit?limit=500", owner)
    assert status == 200
    actions = [e["action"] for e in log["items"]]
    assert actions.count("secrets.read") == 6 and "enrollment.create" in actions
    assert "vaults.register" in actions
    _, page = await api.call("GET", "/audit?limit=2", owner)
    _, nxt = await api.call("GET", f"/audit?limit=2&after={page['next_after']}", owner)
    assert page["items"][-1]["seq"] < nxt["items"][0]["seq"]
    _, reads = await api.call("GET", f"/audit?action=secrets.read&source={v1}", owner)
    assert len(reads["items"]) == 6
    assert (await api.call("GET", "/audit?since=yesterday", owner))[0] == 400


async def test_webhook_v1_signature_verified_and_replay_refused(
    aiohttp_server: Any, aiohttp_client: Any, settings_factory: Any
) -> None:
    """The alert webhook carries the timestamped v1 signature: a real receiver verifies it
    with the documented helper and refuses the same notice sent again."""
    import asyncio

    from aiohttp import ClientSession

    from common.errors import AuthenticationError
    from common.webhooks import ReplayCache, verify
    from control_plane.app import build_app
    from control_plane.views.context import CP

    seen = ReplayCache()
    verdicts: list[str] = []
    captured: list[tuple[bytes, list[tuple[str, str]]]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        captured.append((body, list(request.headers.items())))
        try:
            verify(b"s3cr3t", request.headers, body, seen=seen)
        except AuthenticationError as exc:
            verdicts.append(exc.message)
            return web.Response(status=401)
        verdicts.append("ok")
        return web.Response(text="ok")

    hook_app = web.Application()
    hook_app.router.add_post("/hook", hook)
    server = await aiohttp_server(hook_app)
    url = str(server.make_url("/hook"))
    app = build_app(settings_factory(webhook_url=url, webhook_secret="s3cr3t"))
    await aiohttp_client(app)
    cp = app[CP]
    org = (await cp.accounts.create_org("Acme", "o@acme.test", "correct horse battery"))["org_id"]
    await cp.alerts.raise_alert(org, "integrity_failure", "int:2", "integrity failure on v2")
    for _ in range(200):
        if verdicts:
            break
        await asyncio.sleep(0.02)
    assert verdicts == ["ok"]
    body, headers = captured[0]
    # the legacy value is still sent first for one release, then the v1 one
    sigs = [v for k, v in headers if k.lower() == "x-keyvault-signature"]
    assert sigs[0].startswith("sha256=") and sigs[1].startswith("v1=")
    # a replay of the captured request is refused; so is a changed body
    async with ClientSession() as session:
        resent = [(k, v) for k, v in headers if k.lower() not in ("host", "content-length")]
        async with session.post(url, data=body, headers=resent) as resp:
            assert resp.status == 401
        async with session.post(url, data=body + b" ", headers=resent) as resp:
            assert resp.status == 401
    assert "replay refused" in verdicts[1] and "does not match" in verdicts[2]
