"""Issue 15 on the control plane: NUL and control characters in text fields, integers beyond
the database's types. Each answered 500 before (one of them unauthenticated); now a clear 400
that changes nothing, embedded (SQLite) and in production (PostgreSQL + Redis)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.control_plane.conftest import PASSWORD, Api

BAD_TEXT = ["a\x00b@acme.test", "a\x01b@acme.test", "line\x1bone", "del\x7fete", "c1\x85x"]


@pytest.mark.parametrize("bad", BAD_TEXT, ids=["nul", "soh", "esc", "del", "c1"])
async def test_text_fields_refuse_nul_and_control_characters(api: Api, bad: str) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    cases = [
        ("POST", "/auth/login", None, {"email": bad, "password": PASSWORD}),
        ("POST", "/auth/login", None, {"email": "owner@acme.test", "password": bad}),
        ("POST", "/enrollment-tokens", owner, {"description": bad}),
        ("POST", "/invitations", owner, {"email": bad, "role": "viewer"}),
        ("POST", "/invitations/accept", None, {"token": bad, "password": PASSWORD}),
        (
            "POST",
            "/policies",
            owner,
            {
                "name": bad,
                "selector": {"names": ["db/*"]},
                "interval_seconds": 86400,
                "rotator": {"type": "random"},
            },
        ),
    ]
    for method, path, token, body in cases:
        status, answer = await api.call(method, path, token, json=body)
        assert status == 400, (path, body, status, answer)
        assert answer["error"]["code"] == "invalid_request", answer
        assert "control" in answer["error"]["message"], answer
    for method, path in [
        ("GET", f"/policies/{quote(bad, safe='')}"),
        ("GET", f"/vaults/{quote(bad, safe='')}"),
        ("DELETE", f"/enrollment-tokens/{quote(bad, safe='')}"),
        ("GET", f"/audit?action={quote(bad, safe='')}"),
    ]:
        status, answer = await api.call(method, path, owner)
        assert status in (400, 404), (path, status, answer)
        assert "error" in answer
    status, body = await api.call("GET", "/enrollment-tokens", owner)
    assert status == 200 and body["items"] == []
    status, body = await api.call("GET", "/policies", owner)
    assert status == 200 and body["items"] == []


@pytest.mark.parametrize(
    "after",
    [
        "2147483648",
        "9223372036854775808",
        "99999999999999999999",
    ],
)
async def test_integers_are_range_checked_against_the_database(api: Api, after: str) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    status, body = await api.call("GET", f"/audit?after={after}", owner)
    assert status == 400 and "after" in body["error"]["message"], body
    status, body = await api.call("GET", "/audit?after=2147483647", owner)
    assert status == 200, body
    status, body = await api.call("POST", "/enrollment-tokens", owner, json={"ttl_seconds": 2**63})
    assert status == 400, body
