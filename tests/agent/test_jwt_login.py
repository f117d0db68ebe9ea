"""Workload identity: JWT login with local issuers in the Kubernetes and CI shapes.

Tokens are minted here with keys made here. Every refusal the contract lists is a 401 with a
clear message; the minted token lives ``ttl_s`` and no more, and holds the role's policy only.
The last test logs in over real mutual TLS against a real agent process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.api.app import build_app
from agent.assembly import Agent
from agent.audit.reader import iter_entries
from agent.settings import load_agent_settings
from common.errors import PermissionDeniedError, UnavailableError
from tests.agent import jwtkit
from tests.agent.conftest import Api
from tests.agent.jwtkit import Issuer
from tests.conftest import init_agent_dir, start_agent

LOGIN = "/api/v1/auth/jwt"


class Keys:
    """The two trusted issuers' keys and one the agent does not know."""

    def __init__(self) -> None:
        self.k8s = Issuer.rsa("k8s-1")
        self.ci = Issuer.ec("ci-1")
        self.stranger = Issuer.rsa("k8s-1")  # same kid, other key


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def configure(folder: Path, keys: Keys, *, ttl_s: int = 900) -> None:
    jwks = jwtkit.write_jwks(folder / "jwks.json", keys.k8s, keys.ci)
    with (folder / "agent.yaml").open("a") as fh:
        fh.write(jwtkit.jwt_config(jwks, ttl_s=ttl_s))


@pytest.fixture
async def jwt_api(tmp_path: Path, keys: Keys, aiohttp_client: Any) -> AsyncIterator[Api]:
    folder = init_agent_dir(tmp_path / "agent")
    configure(folder.path, keys, ttl_s=2)
    agent = Agent.open(load_agent_settings(None, folder.path))
    client = await aiohttp_client(build_app(agent))
    try:
        yield Api(agent, client, folder)
    finally:
        await client.close()
        agent.close()


async def login(api: Api, role: str, token: str) -> tuple[int, Any]:
    resp = await api.client.post(LOGIN, json={"role": role, "jwt": token})
    return resp.status, await resp.json()


async def test_kubernetes_login_gets_a_short_lived_token_within_its_role(
    jwt_api: Api, keys: Keys
) -> None:
    await jwt_api.call("POST", "/api/v1/secrets", json={"name": "prod/payments/db", "value": "pw1"})
    await jwt_api.call("POST", "/api/v1/secrets", json={"name": "prod/other/db", "value": "pw2"})
    status, body = await login(jwt_api, "payments-api", keys.k8s.mint(jwtkit.k8s_claims()))
    assert status == 200, body
    assert body["token"].startswith("kvt_") and body["policy"] == {"read": ["prod/payments/**"]}
    token = body["token"]
    status, secret = await jwt_api.call("GET", "/api/v1/secrets/prod%2Fpayments%2Fdb", token)
    assert status == 200 and secret["value"] == "pw1"
    # within its policy: no other secret, no write
    status, _ = await jwt_api.call("GET", "/api/v1/secrets/prod%2Fother%2Fdb", token)
    assert status == 403
    status, _ = await jwt_api.call(
        "PUT", "/api/v1/secrets/prod%2Fpayments%2Fdb", token, json={"value": "x"}
    )
    assert status == 403
    # and it expires (ttl_s is 2 here)
    await asyncio.sleep(2.2)
    status, err = await jwt_api.call("GET", "/api/v1/secrets/prod%2Fpayments%2Fdb", token)
    assert status == 401 and "expired" in err["error"]["message"]


async def test_ci_login_binds_repository_and_branch(jwt_api: Api, keys: Keys) -> None:
    status, body = await login(jwt_api, "deploy", keys.ci.mint(jwtkit.ci_claims()))
    assert status == 200, body
    status, body = await login(
        jwt_api, "deploy", keys.ci.mint(jwtkit.ci_claims(ref="refs/tags/v1.2.0"))
    )
    assert status == 200, body
    for claims in (jwtkit.ci_claims(ref="refs/heads/feature"), jwtkit.ci_claims(repo="evil/api")):
        status, body = await login(jwt_api, "deploy", keys.ci.mint(claims))
        assert status == 401 and "does not match role 'deploy'" in body["error"]["message"]


def _refusals(keys: Keys) -> dict[str, tuple[str, str, str]]:
    """case -> (role, jwt, words the 401's message holds)."""
    now = int(time.time())
    k8s = jwtkit.k8s_claims
    return {
        "alg none": ("payments-api", jwtkit.unsigned(k8s(), "k8s-1"), "alg 'none'"),
        "hmac with the public key": (
            "payments-api",
            jwtkit.hmac_with_public_key(keys.k8s, k8s()),
            "HS256 refused",
        ),
        "expired": (
            "payments-api",
            keys.k8s.mint(k8s(exp=now - 120, iat=now - 700, nbf=now - 700)),
            "expired",
        ),
        "not yet valid (nbf)": ("payments-api", keys.k8s.mint(k8s(nbf=now + 300)), "not yet valid"),
        "issued in the future (iat)": (
            "payments-api",
            keys.k8s.mint({k: v for k, v in k8s(iat=now + 300).items() if k != "nbf"}),
            "not yet valid",
        ),
        "wrong audience": ("payments-api", keys.k8s.mint(k8s(aud=["other"])), "wrong audience"),
        "wrong issuer": (
            "payments-api",
            keys.k8s.mint(k8s(iss="https://evil.example")),
            "wrong issuer",
        ),
        "unknown kid": ("payments-api", keys.k8s.mint(k8s(), kid="k8s-9"), "unknown key id"),
        "bad signature": ("payments-api", keys.stranger.mint(k8s()), "bad JWT signature"),
        "wrong service account": (
            "payments-api",
            keys.k8s.mint(k8s(sub="system:serviceaccount:payments:batch")),
            "subject does not match",
        ),
        "key of another type": ("payments-api", keys.ci.mint(k8s(), kid="k8s-1"), "does not fit"),
        "unknown role": ("nope", keys.k8s.mint(k8s()), "unknown role"),
        "malformed": ("payments-api", "bm90.YS1qd3Q.", "malformed JWT"),
    }


async def test_every_refusal_is_a_clear_401_and_audited(jwt_api: Api, keys: Keys) -> None:
    cases = _refusals(keys)
    for case, (role, token, words) in cases.items():
        status, body = await login(jwt_api, role, token)
        assert status == 401, (case, body)
        assert body["error"]["code"] == "jwt_refused", (case, body)
        assert words in body["error"]["message"], (case, body["error"]["message"])
    entries = [e for e in iter_entries(jwt_api.dir.path) if e.get("op") == "auth.jwt"]
    denied = [e for e in entries if e["outcome"] == "denied"]
    assert len(denied) >= 10  # the first 10 per source each have their own entry
    logged = str(entries)
    for _role, token, _ in cases.values():
        assert token not in logged


async def test_login_audit_names_issuer_subject_and_role_only(jwt_api: Api, keys: Keys) -> None:
    token = keys.k8s.mint(jwtkit.k8s_claims())
    status, body = await login(jwt_api, "payments-api", token)
    assert status == 200
    ok = [e for e in iter_entries(jwt_api.dir.path) if e.get("op") == "auth.jwt"][-1]
    assert ok["outcome"] == "ok" and ok["actor"] == body["token_id"]
    assert ok["extra"] == {
        "role": "payments-api",
        "issuer": "cluster",
        "sub": "system:serviceaccount:payments:api",
    }
    assert token not in str(ok) and body["token"] not in str(ok)


async def test_login_without_configuration_or_with_bad_body(api: Api) -> None:
    resp = await api.client.post(LOGIN, json={"role": "x", "jwt": "a.b.c"})
    body = await resp.json()
    assert resp.status == 401 and "not configured" in body["error"]["message"]
    resp = await api.client.post(LOGIN, json={"role": "x"})
    assert resp.status == 400
    for bad in ({"role": "Bad Role", "jwt": "a.b.c"}, {"role": "x", "jwt": "no dots at all"}):
        resp = await api.client.post(LOGIN, json=bad)
        body = await resp.json()
        assert resp.status == 400 and body["error"]["code"] == "invalid_request", body


def test_settings_refuse_unsafe_roles(tmp_path: Path) -> None:
    from agent.settings import JwtSettings
    from common.typedconf import ValidationError

    issuer = {"name": "c", "issuer": "i", "jwks_file": str(tmp_path), "audiences": ["a"]}
    role = {"name": "r", "issuer": "c", "policy": {"read": ["a/**"]}}
    with pytest.raises(ValidationError, match="must bind the subject or at least one claim"):
        JwtSettings.model_validate({"issuers": [issuer], "roles": [role]})
    bound = {**role, "bound_subject": "x"}
    with pytest.raises(ValidationError, match=r"above auth\.jwt\.max_ttl_s"):
        JwtSettings.model_validate({"issuers": [issuer], "roles": [{**bound, "ttl_s": 7200}]})
    with pytest.raises(ValidationError, match="less than or equal to 300"):
        JwtSettings.model_validate({"issuers": [{**issuer, "max_clock_skew_s": 900}]})
    with pytest.raises(ValidationError, match="https"):
        JwtSettings.model_validate(
            {"issuers": [{**issuer, "jwks_file": None, "jwks_url": "http://x/jwks"}]}
        )


def test_login_over_mutual_tls_against_a_real_agent(tmp_path: Path, keys: Keys) -> None:
    folder = init_agent_dir(tmp_path / "agent", client_cert="required")
    configure(folder.path, keys)
    running = start_agent(folder)
    try:
        with running.client() as admin:
            admin.create("prod/payments/api-key", "k-1")
        token = keys.k8s.mint(jwtkit.k8s_claims())
        # without a client certificate the TLS handshake itself is refused
        with running.client("", cert=False) as no_cert, pytest.raises(UnavailableError):
            no_cert.jwt_login("payments-api", token)
        with running.client("") as anonymous:  # no bearer token; the folder's client cert
            resp = anonymous.jwt_login("payments-api", token)
        assert resp["expires_at"] and resp["token"].startswith("kvt_")
        with running.client(resp["token"]) as workload:
            assert workload.get("prod/payments/api-key")["value"] == "k-1"
            with pytest.raises(PermissionDeniedError):
                workload.create("prod/payments/new", "x")
    finally:
        running.stop()


async def test_jwks_url_is_cached_refreshed_and_bounded(
    tmp_path: Path, keys: Keys, aiohttp_server: Any
) -> None:
    """A JWKS served over real https: fetched once, refreshed on an unknown kid at most once
    per 30 s and every jwks_refresh_s, and a document over 64 KiB is refused (old keys kept)."""
    import json

    from aiohttp import web

    from agent.settings import JwtIssuer
    from agent.workload import Jwks, JwtLoginError
    from common.tls import server_context

    tls = init_agent_dir(tmp_path / "agent").tls  # its server certificate names 127.0.0.1
    served = {"doc": json.dumps({"keys": [keys.k8s.jwk()]}), "hits": 0}

    async def jwks(_: web.Request) -> web.Response:
        served["hits"] += 1
        return web.Response(text=served["doc"], content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    server = await aiohttp_server(app, ssl=server_context(tls / "server.crt", tls / "server.key"))
    now = [1000.0]
    issuer = JwtIssuer(
        name="cluster",
        issuer=jwtkit.K8S_ISS,
        jwks_url=f"https://127.0.0.1:{server.port}/jwks",
        jwks_ca_file=tls / "ca.crt",
        audiences=["keyvault"],
        jwks_refresh_s=300,
    )
    source = Jwks(issuer, clock=lambda: now[0])
    assert (await source.key("k8s-1")).key_id == "k8s-1" and served["hits"] == 1
    await source.key("k8s-1")
    assert served["hits"] == 1  # cached
    with pytest.raises(JwtLoginError, match="unknown key id"):
        await source.key("k8s-2")
    assert served["hits"] == 2  # one refresh for the unknown kid
    with pytest.raises(JwtLoginError, match="unknown key id"):
        await source.key("k8s-2")
    assert served["hits"] == 2  # not again within 30 s
    rotated = Issuer.rsa("k8s-2")
    served["doc"] = json.dumps({"keys": [keys.k8s.jwk(), rotated.jwk()]})
    now[0] += 31
    assert (await source.key("k8s-2")).key_id == "k8s-2" and served["hits"] == 3
    served["doc"] = json.dumps({"keys": [keys.k8s.jwk()], "pad": "x" * 70_000})
    now[0] += 301  # the periodic refresh meets an oversized document: the old keys stay
    assert (await source.key("k8s-2")).key_id == "k8s-2" and served["hits"] == 4
