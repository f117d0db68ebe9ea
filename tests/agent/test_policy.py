"""Access control and audit on the agent API: the capability × path matrix, 401 vs 403, fail-closed audit."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from urllib.parse import quote

import pytest

from agent.auth import CAPABILITIES, Policy, glob_to_regex
from tests.agent.conftest import Api

S = "/api/v1/secrets"
ALLOWED = "team/a/x"
DENIED = ["team/b/x", "team/a/x/deeper", "other"]


def _q(name: str) -> str:
    return quote(name, safe="")


async def _seed(api: Api) -> None:
    for name in [ALLOWED, *DENIED]:
        status, _ = await api.call("POST", S, json={"name": name, "value": f"value-of-{name}"})
        assert status == 201


def _operations(name: str) -> list[tuple[str, str, str, dict | None, int]]:
    """(capability needed, method, path, body, success status) for every secret operation."""
    ref = f"{S}/{_q(name)}"
    return [
        ("read", "GET", ref, None, 200),
        ("read", "GET", f"{ref}/versions", None, 200),
        ("write", "PUT", ref, {"value": "new-value"}, 200),
        ("write", "POST", S, {"name": name + "-new", "value": "v"}, 201),
        ("rotate", "POST", f"{ref}/rotate", {}, 200),
        ("delete", "DELETE", ref, None, 200),
    ]


@pytest.mark.parametrize("granted", CAPABILITIES)
async def test_capability_matrix(api: Api, granted: str) -> None:
    await _seed(api)
    token = await api.token(("team/a/*", [granted]), ("team/a/x-new", [granted]))
    checked = 0
    for name, allowed_path in [(ALLOWED, True)] + [(d, False) for d in DENIED]:
        for needed, method, path, body, ok in _operations(name):
            status, resp = await api.call(method, path, token=token, json=body)
            expect_ok = allowed_path and (granted == needed or granted == "admin")
            if expect_ok:
                assert status == ok, (granted, needed, method, path, resp)
            else:
                assert status == 403, (granted, needed, method, path, resp)
                assert "value-of" not in json.dumps(resp)
            checked += 1
            if method == "DELETE" and status == 200:
                assert (await api.call("POST", f"{S}/{_q(name)}/undelete"))[0] == 200
    # Listing shows only what the token may list.
    status, page = await api.call("GET", S, token=token)
    names = {m["name"] for m in page["secrets"]}
    if granted in ("list", "admin"):
        assert ALLOWED in names and not names & set(DENIED)
    else:
        assert names == set()
    # Agent-wide operations need admin on sys/*, which team/a/* never grants.
    for method, path in [
        ("GET", "/api/v1/sys/tokens"),
        ("GET", "/api/v1/sys/keys"),
        ("POST", "/api/v1/sys/keys/rotate"),
    ]:
        assert (await api.call(method, path, token=token))[0] == 403
    assert checked == 24


async def test_name_check_comes_before_lookup(api: Api) -> None:
    token = await api.token(("team/a/*", ["read"]))
    status_missing, _ = await api.call("GET", f"{S}/{_q('team/b/nothing')}", token=token)
    await api.call("POST", S, json={"name": "team/b/exists", "value": "v"})
    status_present, _ = await api.call("GET", f"{S}/{_q('team/b/exists')}", token=token)
    assert status_missing == status_present == 403  # existence is not revealed


@pytest.mark.parametrize(
    "header",
    [None, "Basic abc", "Bearer", "Bearer notatoken", "Bearer kvt_unknown000000000000000000000"],
)
async def test_401_for_missing_or_bad_tokens(api: Api, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    resp = await api.client.get(S, headers=headers)
    body = await resp.json()
    assert resp.status == 401 and body["error"]["code"] == "unauthenticated"


async def test_revoked_and_expired_tokens(api: Api) -> None:
    status, made = await api.call(
        "POST",
        "/api/v1/sys/tokens",
        json={
            "name": "short",
            "policy": [{"path": "**", "capabilities": ["read"]}],
            "ttl_seconds": 60,
        },
    )
    assert status == 201
    secret, token_id = made["token"], made["info"]["id"]
    assert (await api.call("GET", S, token=secret))[0] == 200
    real_clock = api.agent.tokens._clock
    api.agent.tokens._clock = lambda: real_clock() + timedelta(seconds=61)
    status, body = await api.call("GET", S, token=secret)
    assert status == 401 and "expired" in body["error"]["message"]
    api.agent.tokens._clock = real_clock
    assert (await api.call("DELETE", f"/api/v1/sys/tokens/{token_id}"))[0] == 200
    assert (await api.call("GET", S, token=secret))[0] == 401
    _, listing = await api.call("GET", "/api/v1/sys/tokens")
    assert all("token" not in t for t in listing["tokens"])
    assert secret not in json.dumps(listing)


@pytest.mark.parametrize(
    "policy",
    [
        [],
        "all",
        [{"path": "a"}],
        [{"path": "a", "capabilities": ["fly"]}],
        [{"path": "a b", "capabilities": ["read"]}],
        [{"path": "a", "capabilities": []}],
    ],
)
async def test_bad_policies_refused(api: Api, policy: object) -> None:
    status, body = await api.call(
        "POST", "/api/v1/sys/tokens", json={"name": "x", "policy": policy}
    )
    assert status == 400 and "policy" in body["error"]["message"]


def test_glob_semantics() -> None:
    assert glob_to_regex("app/*").match("app/db")
    assert not glob_to_regex("app/*").match("app/db/x")
    assert glob_to_regex("app/**").match("app/db/x")
    assert glob_to_regex("a?c").match("abc") and not glob_to_regex("a?c").match("a/c")
    assert glob_to_regex("a.b").match("a.b") and not glob_to_regex("a.b").match("axb")
    assert Policy.root().allows("delete", "any/thing")


async def test_every_request_is_audited_denied_ones_too(api: Api) -> None:
    from agent.audit import iter_entries, verify

    await api.call("POST", S, json={"name": "aud/x", "value": "audited-value-123"})
    await api.call("GET", f"{S}/{_q('aud/x')}")
    await api.call("GET", S, token="kvt_bogus_token_value_0000000")
    reader = await api.token(("nothing/*", ["read"]))
    await api.call("GET", f"{S}/{_q('aud/x')}", token=reader)
    entries = list(iter_entries(api.dir.path))
    ops = [(e["op"], e["outcome"], e["status"]) for e in entries]
    assert ("secrets.create", "attempt", 0) in ops and ("secrets.create", "ok", 201) in ops
    assert ("secrets.read", "ok", 200) in ops
    assert ("secrets.list", "denied", 401) in ops
    assert ("secrets.read", "denied", 403) in ops
    raw = (api.dir.path / "audit.log").read_text()
    assert "audited-value-123" not in raw and api.dir.token not in raw
    assert verify(api.dir.path, api.agent.keys.audit_key).ok


async def test_audit_failure_fails_closed_with_503(api: Api) -> None:
    await api.call("POST", S, json={"name": "fc/x", "value": "fail-closed-value"})
    log = api.agent.audit
    good_fd = log._fd
    log._fd = os.open(log.folder / "audit.log", os.O_RDONLY)  # a real EBADF on write
    try:
        resp = await api.client.get(f"{S}/{_q('fc/x')}", headers=api.auth())
        raw = await resp.read()
        assert resp.status == 503
        assert b"fail-closed-value" not in raw
        assert json.loads(raw)["error"]["code"] == "unavailable"
        # A write is refused before it happens.
        status, _ = await api.call("PUT", f"{S}/{_q('fc/x')}", json={"value": "must-not-land"})
        assert status == 503
    finally:
        os.close(log._fd)
        log._fd = good_fd
    _, body = await api.call("GET", f"{S}/{_q('fc/x')}")
    assert body["value"] == "fail-closed-value" and body["version"] == 1
