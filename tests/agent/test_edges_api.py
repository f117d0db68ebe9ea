"""Issue 15 at the agent API: no existence oracle, opaque cursors, tokens within their rights,
authenticated rows, rekey that cannot brick, destroyed data really gone.

Each test reproduces a finding of issue 15 from outside (HTTP), on both storage backends.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.agent.conftest import Api

S = "/api/v1/secrets"


def _q(name: str) -> str:
    return quote(name, safe="")


async def _make(api: Api, name: str, value: str = "value-1") -> dict[str, Any]:
    status, meta = await api.call("POST", S, json={"name": name, "value": value})
    assert status == 201, meta
    return dict(meta)


def _by_ref_routes(ref: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route that takes a secret id or name."""
    base = f"{S}/{_q(ref)}"
    return [
        ("GET", base, None),
        ("GET", f"{base}?version=1", None),
        ("GET", f"{base}/versions", None),
        ("PUT", base, {"value": "new"}),
        ("DELETE", base, None),
        ("POST", f"{base}/rotate", {}),
        ("POST", f"{base}/undelete", None),
        ("POST", f"{base}/destroy", None),
    ]


def _scrub(body: Any, *refs: str) -> str:
    text = json.dumps(body, sort_keys=True)
    for ref in refs:
        text = text.replace(ref, "REF")
    return text


async def test_not_yours_and_not_there_get_one_answer_by_id(api: Api) -> None:
    theirs = await _make(api, "other/x/db", "their-value")
    deleted = await _make(api, "other/x/gone", "gone-value")
    assert (await api.call("DELETE", f"{S}/{deleted['id']}"))[0] == 200
    token = await api.token(("public/**", ["read", "list", "write", "rotate", "delete"]))
    missing = "sec_" + "a" * 26
    for foreign in (theirs["id"], deleted["id"]):
        for (method, path, body), (_m2, path_missing, _b) in zip(
            _by_ref_routes(foreign), _by_ref_routes(missing), strict=True
        ):
            got = await api.call(method, path, token=token, json=body)
            want = await api.call(method, path_missing, token=token, json=body)
            assert got[0] == want[0] == 404, (method, path, got, want)
            assert _scrub(got[1], foreign) == _scrub(want[1], missing), (method, path)
            assert "other/x" not in json.dumps(got[1])
    # nothing changed
    status, body = await api.call("GET", f"{S}/{theirs['id']}")
    assert status == 200 and body["value"] == "their-value" and body["version"] == 1


async def test_not_yours_and_not_there_get_one_answer_by_name(api: Api) -> None:
    await _make(api, "other/x/db")
    token = await api.token(("public/**", ["read", "list", "write", "rotate", "delete"]))
    for (method, path, body), (_m, path_missing, _b) in zip(
        _by_ref_routes("other/x/db"), _by_ref_routes("other/x/nothing"), strict=True
    ):
        got = await api.call(method, path, token=token, json=body)
        want = await api.call(method, path_missing, token=token, json=body)
        assert got[0] == want[0], (method, path, got, want)
        assert _scrub(got[1], "other/x/db") == _scrub(want[1], "other/x/nothing")


def _cursor_bytes(cursor: str) -> bytes:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


async def test_cursor_is_opaque_and_authenticated(api: Api) -> None:
    for name in ("prod/db/password", "public/a", "public/b", "public/c"):
        await _make(api, name)
    status, page = await api.call("GET", f"{S}?limit=1")
    assert status == 200 and page["next"]
    for cursor_name in ("prod/db/password", "public/a"):
        assert cursor_name.encode() not in _cursor_bytes(page["next"])
        assert cursor_name not in page["next"]
    # a forged cursor (the old format: base64 of a name) is refused, not followed
    forged = base64.urlsafe_b64encode(b"public/a").decode().rstrip("=")
    status, err = await api.call("GET", f"{S}?after={forged}")
    assert status in (400, 404) and "cursor" in err["error"]["message"]
    # a cursor bit-flipped is refused
    raw = bytearray(_cursor_bytes(page["next"]))
    raw[-1] ^= 1
    flipped = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    status, err = await api.call("GET", f"{S}?after={flipped}")
    assert status == 404 and "cursor" in err["error"]["message"]
    # the genuine cursor still pages through everything
    seen, after = [page["secrets"][0]["name"]], page["next"]
    while after:
        status, page = await api.call("GET", f"{S}?limit=1&after={after}")
        assert status == 200
        seen += [m["name"] for m in page["secrets"]]
        after = page["next"]
    assert seen == ["prod/db/password", "public/a", "public/b", "public/c"]


async def test_listing_is_filtered_by_policy_in_the_query(api: Api) -> None:
    for i in range(6):
        await _make(api, f"a/hidden/{i}")
    for name in ("public/x", "public/y", "zz/hidden"):
        await _make(api, name)
    token = await api.token(("public/*", ["list"]))
    status, page = await api.call("GET", f"{S}?limit=2", token=token)
    assert status == 200
    # a full page of what the token may list, not an empty page and a cursor past hidden names
    assert [m["name"] for m in page["secrets"]] == ["public/x", "public/y"]
    if page["next"]:
        status, rest = await api.call("GET", f"{S}?limit=2&after={page['next']}", token=token)
        assert status == 200 and rest["secrets"] == [] and rest["next"] is None


async def test_a_token_mints_only_within_its_own_rights(api: Api) -> None:
    minter = await api.token(("sys/tokens", ["admin"]), ("app/**", ["read", "list"]))
    cases = [
        ([{"path": "**", "capabilities": ["admin"]}], 403),
        ([{"path": "app/**", "capabilities": ["write"]}], 403),
        ([{"path": "**", "capabilities": ["read"]}], 403),
        ([{"path": "app/*", "capabilities": ["admin"]}], 403),
        ([{"path": "sys/keys", "capabilities": ["admin"]}], 403),
        ([{"path": "app/db/*", "capabilities": ["read"]}], 201),
        ([{"path": "app/**", "capabilities": ["read", "list"]}], 201),
        ([{"path": "app/?", "capabilities": ["list"]}], 201),
        ([{"path": "sys/tokens", "capabilities": ["admin"]}], 201),
    ]
    for policy, expected in cases:
        status, body = await api.call(
            "POST", "/api/v1/sys/tokens", token=minter, json={"name": "n", "policy": policy}
        )
        assert status == expected, (policy, body)
        if expected == 403:
            assert "own" in body["error"]["message"], body


def _sqlite(api: Api) -> sqlite3.Connection | None:
    if api.agent.store.backend != "sqlite":
        return None
    return sqlite3.connect(api.dir.path / "store.db")


def _exec(api: Api, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Tamper with the store from outside the agent (an attacker with write access)."""
    conn = _sqlite(api)
    if conn is not None:
        with conn:
            conn.execute(sql, params)
        conn.close()
        return
    import psycopg

    url = api.agent.store.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]


async def test_an_inserted_token_row_is_refused_and_reported(api: Api) -> None:
    from agent.auth import hash_token

    secret = "kvt_" + "A" * 43
    _exec(
        api,
        "INSERT INTO kv_tokens (id, name, token_hash, policy, created_at) VALUES (?, ?, ?, ?, ?)",
        (
            "tok_aaaaaaaaaaaaaaaa",
            "forged",
            hash_token(secret),
            json.dumps([{"path": "**", "capabilities": ["admin"]}]),
            "2026-01-01T00:00:00+00:00",
        ),
    )
    status, body = await api.call("GET", S, token=secret)
    assert status == 401, body
    assert api.agent.metrics.integrity_failures >= 1
    # a revoked token un-revoked behind the agent's back stays revoked
    victim = await api.token(("public/**", ["read"]))
    status, body = await api.call("GET", "/api/v1/sys/tokens")
    tid = next(t["id"] for t in body["tokens"] if t["name"] == "t")
    assert (await api.call("DELETE", f"/api/v1/sys/tokens/{tid}"))[0] == 200
    _exec(api, "UPDATE kv_tokens SET revoked_at = NULL WHERE id = ?", (tid,))
    api.agent.tokens._cache.clear()
    assert (await api.call("GET", S, token=victim))[0] == 401


async def test_renaming_a_secret_in_the_store_is_refused(api: Api) -> None:
    await _make(api, "prod/db/password", "prod-value")
    token = await api.token(("public/**", ["read", "list"]))
    _exec(api, "UPDATE kv_secrets SET name = 'public/stolen' WHERE name = 'prod/db/password'")
    api.agent.secrets._by_id.clear()
    api.agent.secrets._by_name.clear()
    status, body = await api.call("GET", f"{S}/{_q('public/stolen')}", token=token)
    assert status in (404, 500) and "prod-value" not in json.dumps(body), body
    assert api.agent.metrics.integrity_failures >= 1
    status, page = await api.call("GET", S, token=token)
    assert "prod-value" not in json.dumps(page)
    assert "public/stolen" not in [m["name"] for m in page.get("secrets", [])]


async def test_rekey_refuses_control_characters_and_names_the_fix(api: Api, tmp_path: Path) -> None:
    for phrase in ("pass\x00word-long-enough", "pass\nword-long-enough", "pass\x1bword-long"):
        status, err = await api.call(
            "POST", "/api/v1/sys/keys/rekey", json={"new_passphrase": phrase}
        )
        assert status == 400 and "control" in err["error"]["message"], err
    missing = tmp_path / "nope.key"
    status, err = await api.call(
        "POST", "/api/v1/sys/keys/rekey", json={"new_key_file": str(missing)}
    )
    assert status == 400, err
    message = err["error"]["message"]
    assert "agent init" not in message and str(missing) in message and "openssl rand" in message
