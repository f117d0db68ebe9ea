"""Enrollment tokens, registration (CSR → certificate), the registry, revocation, the CRL."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from cryptography import x509

from common.pki import make_csr, spki_pin
from control_plane import schema as t
from tests.control_plane.conftest import Api


async def enroll_token(api: Api, owner: str, **kw: object) -> str:
    """A fresh enrollment token string."""
    status, body = await api.call("POST", "/enrollment-tokens", owner, json=dict(kw))
    assert status == 201, body
    assert body["created_at"] <= body["expires_at"]  # shown once, with when it was made
    return str(body["token"])


async def register(api: Api, token: str, csr: bytes, name: str = "vault-1") -> tuple[int, dict]:
    """POST /vaults/register."""
    return await api.call(
        "POST",
        "/vaults/register",
        json={"token": token, "csr": csr.decode(), "name": name, "agent_version": "0.1.0"},
    )


async def test_token_carries_ca_pin_and_registration_signs(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    token = await enroll_token(api, owner, description="web-1")
    csr, _key = make_csr("anything")
    status, ident = await register(api, token, csr)
    assert status == 201, ident
    ca = x509.load_pem_x509_certificate(ident["ca_certificate"].encode())
    service = await api.cp.vaults.cas.service()
    # the token pins the service CA (the gateway's root); the org CA is its intermediate
    assert token.split(".")[1] == service.pin().removeprefix("sha256:")
    ca.verify_directly_issued_by(service.cert)
    cert = x509.load_pem_x509_certificate(ident["certificate"].encode())
    assert cert.subject.rfc4514_string() == f"CN={ident['vault_id']}"
    assert cert.issuer == ca.subject
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.total_seconds() <= 25 * 3600
    status, ca_info = await api.call("GET", "/ca", owner)
    assert ca_info["pin"] == spki_pin(ca)
    # the token is stored hashed, the CA key encrypted
    async with api.cp.engine.connect() as conn:
        dump = str([r._mapping for r in await conn.execute(sa.select(t.enrollment_tokens))])
        ca_row = (await conn.execute(sa.select(t.cas))).one()
    assert token not in dump and token.split(".")[0] not in dump
    assert "ENCRYPTED PRIVATE KEY" in ca_row.key_pem_encrypted
    status, tokens = await api.call("GET", "/enrollment-tokens", owner)
    assert tokens["items"][0]["state"] == "used"
    assert tokens["items"][0]["vault_id"] == ident["vault_id"]


async def test_expired_reused_revoked_tokens_are_refused(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    expired = await enroll_token(api, owner, ttl_seconds=10)
    api.clock.advance(11)
    csr, _ = make_csr("x")
    status, body = await register(api, expired, csr)
    assert status == 401 and body["error"]["code"] == "enrollment_refused"
    token = await enroll_token(api, owner)
    assert (await register(api, token, csr))[0] == 201
    other_csr, _ = make_csr("y")
    status, body = await register(api, token, other_csr)
    assert status == 401, body
    revoked = await enroll_token(api, owner)
    _, tokens = await api.call("GET", "/enrollment-tokens", owner)
    active = [x for x in tokens["items"] if x["state"] == "active"]
    assert len(active) == 1
    status, body = await api.call("DELETE", f"/enrollment-tokens/{active[0]['id']}", owner)
    assert status == 200 and body["state"] == "revoked"
    assert (await register(api, revoked, csr))[0] == 401
    # unknown token of the right shape
    fake = "kve_" + "A" * 43 + "." + "0" * 64
    assert (await register(api, fake, csr))[0] == 401


async def test_lost_response_retried_with_same_csr(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    token = await enroll_token(api, owner)
    csr, _ = make_csr("x")
    status, first = await register(api, token, csr)
    assert status == 201
    status, again = await register(api, token, csr)
    assert status == 200 and again["vault_id"] == first["vault_id"]
    assert again["certificate"] == first["certificate"]
    api.clock.advance(api.cp.settings.enrollment_grace_seconds + 1)
    status, _ = await register(api, token, csr)
    assert status == 401
    _, vaults = await api.call("GET", "/vaults", owner)
    assert len(vaults["items"]) == 1


async def test_twenty_concurrent_registrations_make_one_vault(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    token = await enroll_token(api, owner)
    csrs = [make_csr(f"agent-{i}")[0] for i in range(20)]
    results = await asyncio.gather(*(register(api, token, c, f"v{i}") for i, c in enumerate(csrs)))
    statuses = sorted(s for s, _ in results)
    assert statuses.count(201) == 1, statuses
    assert statuses.count(401) == 19, statuses
    _, vaults = await api.call("GET", "/vaults", owner)
    assert len(vaults["items"]) == 1


async def test_list_detail_status_revoke_crl(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    ids = []
    for i in range(5):
        token = await enroll_token(api, owner)
        status, ident = await register(api, token, make_csr("x")[0], f"vault-{i}")
        ids.append(ident["vault_id"])
    _, page1 = await api.call("GET", "/vaults?limit=2", owner)
    _, page2 = await api.call("GET", f"/vaults?limit=2&cursor={page1['next_cursor']}", owner)
    _, page3 = await api.call("GET", f"/vaults?limit=2&cursor={page2['next_cursor']}", owner)
    seen = [v["id"] for p in (page1, page2, page3) for v in p["items"]]
    assert sorted(seen) == sorted(ids) and page3["next_cursor"] is None
    assert {v["status"] for v in page1["items"]} == {"pending"}
    await api.cp.vaults.heartbeat(ids[0], {"secrets": 3})
    status, detail = await api.call("GET", f"/vaults/{ids[0]}", owner)
    assert detail["status"] == "online" and detail["health"] == {"secrets": 3}
    api.clock.advance(api.cp.settings.offline_after_seconds + 1)
    assert (await api.call("GET", f"/vaults/{ids[0]}", owner))[1]["status"] == "offline"
    status, revoked = await api.call("POST", f"/vaults/{ids[1]}/revoke", owner)
    assert status == 200 and revoked["status"] == "revoked"
    status, pem = await api.call("GET", "/ca/crl", owner)
    crl = x509.load_pem_x509_crl(pem.encode())
    assert [r.serial_number for r in crl] == [int(revoked["certificate_serial"], 16)]
    assert await api.cp.vaults.heartbeat(ids[1]) == "revoked"
    assert (await api.call("GET", "/vaults?limit=0", owner))[0] == 400
    assert (await api.call("GET", "/vaults?bogus=1", owner))[0] == 400
    assert (await api.call("GET", "/vaults/vlt_nope", owner))[0] == 404


async def test_bad_csr_and_fields(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    token = await enroll_token(api, owner)
    status, body = await api.call(
        "POST",
        "/vaults/register",
        json={
            "token": token,
            "csr": "-----BEGIN CERTIFICATE REQUEST-----\nxx",
            "name": "a",
            "agent_version": "1",
        },
    )
    assert status == 400, body
    csr = make_csr("x")[0].decode()
    for bad in ({"name": "bad name!"}, {"agent_version": "x y"}, {"csr": 5}):
        doc = {"token": token, "csr": csr, "name": "a", "agent_version": "1", **bad}
        status, body = await api.call("POST", "/vaults/register", json=doc)
        assert status == 400, (bad, body)
    # the token survived the bad attempts
    assert (await register(api, token, csr.encode()))[0] == 201
