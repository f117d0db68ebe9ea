"""The control plane binds each SSO login to the nonce it issued, on SQLite and on PostgreSQL
+ Redis: single use, expiring, per organisation. The provider's keys are a real RSA key set
(ID tokens really signed and verified); only the network fetch of that key set is skipped by
priming the service's cache (the fetch itself: tests/control_plane/test_outbound.py, and the
whole flow against a real provider: tests/apps/test_sso.py)."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.control_plane.conftest import Api

ISSUER = "https://9.9.9.9"  # a public address: configuring only checks it, nothing is fetched
CLIENT_ID = "keyvault-operators"


class Provider:
    """A signing key and its published key set, as an OpenID provider has."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.keyset = jwt.PyJWKSet.from_dict({"keys": [{**public, "kid": "k1", "use": "sig"}]})

    def id_token(self, nonce: str, email: str = "dana@acme.test") -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": CLIENT_ID,
            "sub": email,
            "email": email,
            "groups": ["ops"],
            "nonce": nonce,
            "iat": now,
            "exp": now + 300,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "k1"})


async def setup(api: Api, name: str) -> tuple[str, Provider]:
    """An organisation trusting ISSUER; the provider whose keys the service now holds."""
    owner = await api.org(name, f"owner@{name}.test")
    status, body = await api.call(
        "PUT",
        "/org/sso",
        owner,
        json={"issuer": ISSUER, "client_id": CLIENT_ID, "role_map": {"ops": "operator"}},
    )
    assert status == 200, body
    provider = Provider()
    api.cp.sso._keys[ISSUER] = (time.monotonic(), provider.keyset)
    status, me = await api.call("GET", "/me", owner)
    return str(me["org"]["id"]), provider


async def start(api: Api, org: str) -> dict[str, Any]:
    status, login = await api.call("POST", f"/auth/sso/{org}/start")
    assert status == 200, login
    assert set(login) >= {"issuer", "client_id", "login_id", "nonce", "expires_in"}
    return dict(login)


async def sso(api: Api, org: str, token: str, login_id: str) -> tuple[int, Any]:
    body = {"org_id": org, "id_token": token, "login_id": login_id}
    return await api.call("POST", "/auth/sso", json=body)


async def test_a_login_is_single_use_and_expires(api: Api) -> None:
    org, provider = await setup(api, "acme")
    login = await start(api, org)
    token = provider.id_token(login["nonce"])
    status, session = await sso(api, org, token, login["login_id"])
    assert status == 200, session
    status, replay = await sso(api, org, token, login["login_id"])
    assert status == 401, replay
    assert "already used or has expired" in replay["error"]["message"]
    late = await start(api, org)
    api.clock.advance(late["expires_in"] + 1)
    status, expired = await sso(api, org, provider.id_token(late["nonce"]), late["login_id"])
    assert status == 401, expired
    assert "already used or has expired" in expired["error"]["message"]


async def test_the_token_must_carry_the_nonce_issued_for_this_login(api: Api) -> None:
    org, provider = await setup(api, "acme")
    first, second = await start(api, org), await start(api, org)
    status, wrong = await sso(api, org, provider.id_token(first["nonce"]), second["login_id"])
    assert status == 401, wrong
    assert "not issued for this sign-in (nonce)" in wrong["error"]["message"]
    status, none = await sso(api, org, provider.id_token(""), first["login_id"])
    assert status == 401, none  # an empty nonce never equals the one issued
    assert "nonce" in none["error"]["message"]


async def test_a_login_started_for_another_organisation_is_refused(api: Api) -> None:
    org, provider = await setup(api, "acme")
    other, _ = await setup(api, "globex")
    login = await start(api, other)
    status, refused = await sso(api, org, provider.id_token(login["nonce"]), login["login_id"])
    assert status == 401, refused
    assert "not started here" in refused["error"]["message"]


async def test_configuring_an_internal_or_bad_issuer_is_a_clear_400(api: Api) -> None:
    owner = await api.org("acme", "owner@acme.test")
    base = {"client_id": CLIENT_ID, "role_map": {"ops": "operator"}}
    cases = {
        "https://10.0.0.5": "resolves to 10.0.0.5, a private address; allow it with "
        "`sso.allowed_networks` if this provider is internal",
        "https://[fd00::5]/realm": "fd00::5, a unique-local address",
        "http://9.9.9.9": "must use https://",
        "https://" + "a" * 500: "at most 500 characters",
    }
    for issuer, why in cases.items():
        status, body = await api.call("PUT", "/org/sso", owner, json={**base, "issuer": issuer})
        assert status == 400, (issuer, body)
        assert why in body["error"]["message"], (issuer, body)
    status, body = await api.call("GET", "/org/sso", owner)
    assert status == 404, body  # nothing was stored
