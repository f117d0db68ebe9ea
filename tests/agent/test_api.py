"""The agent API on both backends: CRUD, versions, names, paging, deletes, rotation, bad input."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tests.agent.conftest import Api

S = "/api/v1/secrets"


def ref(name: str) -> str:
    return f"{S}/{quote(name, safe='')}"


async def test_create_read_update_versions(api: Api) -> None:
    status, meta = await api.call(
        "POST",
        S,
        json={
            "name": "db/prod/password",
            "value": "v1-secret",
            "description": "main db",
            "labels": {"env": "prod"},
        },
    )
    assert status == 201, meta
    assert meta["version"] == 1 and meta["id"].startswith("sec_") and "value" not in meta
    status, body = await api.call("GET", ref("db/prod/password"))
    assert status == 200 and body["value"] == "v1-secret" and body["labels"] == {"env": "prod"}
    status, body = await api.call("PUT", f"{S}/{meta['id']}", json={"value": "v2-secret"})
    assert status == 200 and body["version"] == 2
    status, body = await api.call("GET", f"{S}/{meta['id']}")
    assert body["value"] == "v2-secret" and body["version"] == 2
    status, body = await api.call("GET", f"{S}/{meta['id']}?version=1")
    assert status == 200 and body["value"] == "v1-secret" and body["version"] == 1
    assert body["current_version"] == 2
    status, body = await api.call("GET", f"{S}/{meta['id']}/versions")
    assert [v["version"] for v in body["versions"]] == [2, 1]
    assert body["versions"][0]["current"] is True
    status, body = await api.call("GET", f"{S}/{meta['id']}?version=9")
    assert status == 404
    # metadata-only update keeps the version
    status, body = await api.call("PUT", ref("db/prod/password"), json={"description": "changed"})
    assert status == 200 and body["version"] == 2 and body["description"] == "changed"


async def test_listing_is_metadata_only_and_keyset_paginated(api: Api) -> None:
    for i in range(25):
        status, _ = await api.call("POST", S, json={"name": f"app/k{i:02d}", "value": f"value-{i}"})
        assert status == 201
    await api.call("POST", S, json={"name": "other/x", "value": "zzz-value"})
    seen: list[str] = []
    after = None
    while True:
        q = f"{S}?prefix=app/&limit=10" + (f"&after={after}" if after else "")
        status, page = await api.call("GET", q)
        assert status == 200
        assert all("value" not in item for item in page["secrets"])
        assert "value-" not in json.dumps(page)
        seen += [item["name"] for item in page["secrets"]]
        after = page["next"]
        if not after:
            break
    assert seen == [f"app/k{i:02d}" for i in range(25)]
    status, page = await api.call("GET", f"{S}?prefix=app%25")  # a LIKE wildcard is literal
    assert page["secrets"] == []


async def test_soft_delete_undelete_destroy(api: Api) -> None:
    _, meta = await api.call("POST", S, json={"name": "tmp/one", "value": "abc-def"})
    assert (await api.call("DELETE", ref("tmp/one")))[0] == 200
    status, body = await api.call("GET", ref("tmp/one"))
    assert status == 404 and "deleted" in body["error"]["message"]
    _, page = await api.call("GET", S)
    assert page["secrets"] == []
    _, page = await api.call("GET", f"{S}?deleted=true")
    assert [m["name"] for m in page["secrets"]] == ["tmp/one"]
    status, _ = await api.call("POST", S, json={"name": "tmp/one", "value": "again"})
    assert status == 409
    assert (await api.call("POST", f"{ref('tmp/one')}/undelete"))[0] == 200
    assert (await api.call("GET", ref("tmp/one")))[1]["value"] == "abc-def"
    assert (await api.call("POST", f"{ref('tmp/one')}/destroy"))[0] == 409  # not deleted yet
    await api.call("DELETE", f"{S}/{meta['id']}")
    assert (await api.call("POST", f"{S}/{meta['id']}/destroy"))[0] == 200
    assert (await api.call("GET", f"{S}/{meta['id']}/versions"))[0] == 404
    assert (await api.call("POST", S, json={"name": "tmp/one", "value": "new"}))[0] == 201


async def test_rotate_with_rules(api: Api) -> None:
    await api.call("POST", S, json={"name": "svc/key", "value": "initial"})
    status, meta = await api.call(
        "POST", f"{ref('svc/key')}/rotate", json={"length": 40, "classes": ["digits"]}
    )
    assert status == 200 and meta["version"] == 2 and "value" not in meta
    _, body = await api.call("GET", ref("svc/key"))
    assert len(body["value"]) == 40 and body["value"].isdigit()
    status, _ = await api.call(
        "POST", f"{ref('svc/key')}/rotate", json={"mode": "bytes", "length": 16, "encoding": "hex"}
    )
    _, body = await api.call("GET", ref("svc/key"))
    assert status == 200 and len(body["value"]) == 32 and int(body["value"], 16) >= 0
    status, body = await api.call("POST", f"{ref('svc/key')}/rotate", json={"length": 4})
    assert status == 400 and "length" in body["error"]["message"]
    status, _ = await api.call("POST", f"{ref('svc/key')}/rotate")
    assert status == 200


BAD_BODIES = [
    (b"{not json", "not valid JSON"),
    (b"[1,2]", "JSON object"),
    (b"", "JSON object"),
    (b"[" * 5000 + b"]" * 5000, "nests deeper"),
    (json.dumps({"name": "a", "value": "b", "extra": 1}).encode(), "unknown field"),
    (json.dumps({"name": "a"}).encode(), "missing required"),
    (json.dumps({"name": 5, "value": "b"}).encode(), "name must be"),
    (json.dumps({"name": "a", "value": 5}).encode(), "value must be a string"),
    (json.dumps({"name": "a", "value": ""}).encode(), "must not be empty"),
    (json.dumps({"name": "a", "value": "b", "labels": []}).encode(), "labels"),
    (json.dumps({"name": "a", "value": "b", "labels": {"Bad Key": "x"}}).encode(), "label key"),
    (json.dumps({"name": "a", "value": "b", "description": 7}).encode(), "description"),
    (json.dumps({"name": "a", "value": "\ud800"}).encode(), "not valid unicode"),
    (json.dumps({"name": "a", "value": "b", "labels": {"k": "\udfff"}}).encode(), "lone surrogate"),
]
BAD_NAMES = [
    "",
    "/lead",
    "trail/",
    "a//b",
    "../x",
    "a/../b",
    "sp ace",
    "new\nline",
    "é",
    "x" * 201,
    "sec_aaaaaaaaaaaaaaaaaaaaaaaaaa",
    ".hidden",
]


@pytest.mark.parametrize(("body", "needle"), BAD_BODIES, ids=[n for _, n in BAD_BODIES])
async def test_bad_bodies_get_clear_400s_and_change_nothing(
    api: Api, body: bytes, needle: str
) -> None:
    status, err = await _post_raw(api, body)
    assert status == 400, err
    assert set(err) == {"error"} and needle.lower() in err["error"]["message"].lower()
    _, page = await api.call("GET", S)
    assert page["secrets"] == []


async def _post_raw(api: Api, body: bytes) -> tuple[int, dict]:
    resp = await api.client.post(
        S, data=body, headers={**api.auth(), "Content-Type": "application/json"}
    )
    return resp.status, await resp.json()


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_odd_names_refused(api: Api, name: str) -> None:
    status, err = await api.call("POST", S, json={"name": name, "value": "v"})
    assert status == 400 and "name" in err["error"]["message"]


async def test_oversize_body_is_413(api: Api) -> None:
    big = json.dumps({"name": "big", "value": "x" * (api.agent.settings.max_body_bytes + 10)})
    status, err = await _post_raw(api, big.encode())
    assert status == 413 and err["error"]["code"] == "payload_too_large"
    value = "x" * (api.agent.settings.max_value_bytes + 1)
    status, err = await api.call("POST", S, json={"name": "big", "value": value})
    assert status == 400 and "limit" in err["error"]["message"]


async def test_unknown_routes_and_methods_are_json(api: Api) -> None:
    status, err = await api.call("GET", "/api/v1/nope")
    assert status == 404 and err["error"]["code"] == "not_found"
    status, err = await api.call("PATCH", S)
    assert status == 405 and "error" in err
    status, err = await api.call("GET", f"{S}?limit=0")
    assert status == 400 and "limit" in err["error"]["message"]
    status, err = await api.call("GET", f"{S}?bogus=1")
    assert status == 400


async def test_health_metrics_openapi(api: Api) -> None:
    resp = await api.client.get("/api/v1/health")
    body = await resp.json()
    assert (
        resp.status == 200 and body["status"] == "healthy" and body["vault_id"].startswith("vlt_")
    )
    status, _ = await api.call("GET", "/api/v1/metrics", token="kvt_wrong")
    assert status == 401
    await api.call("POST", S, json={"name": "m", "value": "v"})
    status, text = await api.call("GET", "/api/v1/metrics")
    assert status == 200
    assert 'keyvault_requests_total{route="secrets.create",status="201"} 1' in text
    assert "keyvault_secrets 1" in text
    assert "# TYPE keyvault_request_seconds histogram" in text
    resp = await api.client.get("/api/v1/openapi.json")
    doc = await resp.json()
    assert doc["openapi"] == "3.1.0"


def test_openapi_matches_every_route_exactly() -> None:
    from agent.api.openapi import openapi_document
    from agent.api.routes import PREFIX, ROUTES

    served = {(m.lower(), PREFIX + p) for m, p, *_ in ROUTES}
    documented = {
        (method, path)
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert served == documented


async def test_kek_rotation_and_rekey_keep_every_value(api: Api, tmp_path) -> None:
    from agent.crypto import generate_key_file

    values = {f"k/{i}": f"value-{i}" for i in range(30)}
    for name, value in values.items():
        await api.call("POST", S, json={"name": name, "value": value})
    await api.call("PUT", ref("k/0"), json={"value": "value-0b"})
    status, job = await api.call("POST", "/api/v1/sys/keys/rotate")
    assert status == 202
    job = await _wait_job(api, job["id"])
    assert job["state"] == "succeeded", job
    assert job["result"]["rewrapped"] == 31 and job["result"]["destroyed"] == [1]
    _, keys = await api.call("GET", "/api/v1/sys/keys")
    assert keys["active"] == 2
    assert {k["version"]: (k["state"], k["values"]) for k in keys["keks"]} == {
        1: ("destroyed", 0),
        2: ("active", 31),
    }
    for name, value in values.items():
        assert (await api.call("GET", ref(name)))[1]["value"] == (
            value if name != "k/0" else "value-0b"
        )
    assert (await api.call("GET", f"{ref('k/0')}?version=1"))[1]["value"] == "value-0"
    new_key = tmp_path / "new.key"
    generate_key_file(new_key)
    status, job = await api.call(
        "POST", "/api/v1/sys/keys/rekey", json={"new_key_file": str(new_key)}
    )
    assert status == 202
    assert (await _wait_job(api, job["id"]))["state"] == "succeeded"
    assert (await api.call("GET", ref("k/5")))[1]["value"] == "value-5"
    # The store now opens with the new key only.
    from agent.crypto import KeySource
    from agent.keys import KeyManager
    from common.errors import IntegrityError

    KeyManager.unlock(api.agent.store, KeySource.from_key_file(new_key))
    with pytest.raises(IntegrityError):
        KeyManager.unlock(api.agent.store, KeySource.from_key_file(api.dir.path / "master.key"))


async def _wait_job(api: Api, job_id: str) -> dict:
    import asyncio

    for _ in range(200):
        _, job = await api.call("GET", f"/api/v1/sys/jobs/{job_id}")
        if job["state"] != "running":
            return job
        await asyncio.sleep(0.02)
    raise AssertionError("job did not finish")
