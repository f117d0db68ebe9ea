"""Certificates that can really be revoked, against a real gateway (mutual TLS 1.3), embedded
and on PostgreSQL + Redis: only a vault's current certificate serial connects (the previous one
for a short overlap after a renewal), renewal is rate-limited and refused for a revoked vault,
and a revoke closes the live socket and keeps every certificate of the vault out."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from cryptography import x509

from common import uplink
from common.pki import make_csr
from common.tls import write_pem
from control_plane import schema as t
from control_plane.app import build_app
from control_plane.gateway.app import GATEWAY
from control_plane.views.context import CP
from tests.control_plane.conftest import Api, Clock
from tests.control_plane.mock_agent import Enrolled, Uplink, enroll

OVERLAP = 3.0  # seconds a replaced certificate may still connect (configurable, short here)
INTERVAL = 1.0  # seconds between two renewals of one vault


@pytest.fixture
async def api(aiohttp_client: Any, settings_factory: Callable[..., Any]) -> AsyncIterator[Api]:
    """The control plane in-process with short certificate windows, on real time (the
    certificates it signs must be valid for the TLS stack's clock too)."""
    clock = Clock()
    app = build_app(
        settings_factory(cert_overlap_seconds=OVERLAP, cert_renewal_interval_seconds=INTERVAL),
        clock=clock,
    )
    client = await aiohttp_client(app)
    yield Api(client, app[CP], clock, gateway=app.get(GATEWAY))


async def _renew(link: Uplink, folder: Path) -> Enrolled:
    """Renew over ``link``; the new identity written to ``folder`` (key + leaf/CA chain)."""
    csr, key = make_csr("renewal")
    await link.send({"type": "renew", "csr": csr.decode()})
    reply = await link.recv("certificate")
    folder.mkdir(parents=True, exist_ok=True)
    write_pem(folder / "client.key", key, private=True)
    write_pem(folder / "client.crt", (reply["certificate"] + reply["ca_certificate"]).encode())
    return dataclasses.replace(link.agent, folder=folder)


def _serial(agent: Enrolled) -> str:
    cert = x509.load_pem_x509_certificate(agent.chain.read_bytes())
    return format(cert.serial_number, "x")


async def _refused(agent: Enrolled) -> str:
    """Connecting with ``agent``'s certificate is refused before the upgrade; the error code."""
    async with aiohttp.ClientSession() as session:
        resp = await session.get(agent.gateway_url + uplink.UPLINK_PATH, ssl=agent.ssl())
        body = await resp.json()
    assert resp.status == 403, (resp.status, body)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await agent.connect()
    assert info.value.status == 403
    return str(body["error"]["code"])


async def _vault_row(api: Api, vault_id: str) -> Any:
    async with api.cp.engine.connect() as conn:
        return (await conn.execute(sa.select(t.vaults).where(t.vaults.c.id == vault_id))).one()


async def test_old_certificate_is_refused_after_the_overlap(api: Api, tmp_path: Path) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    first = await enroll(api, owner, tmp_path / "agent")
    link = await first.online()
    second = await _renew(link, tmp_path / "renewed")
    await link.close()
    assert _serial(second) != _serial(first)
    row = await _vault_row(api, first.vault_id)
    assert (row.cert_serial, row.prev_cert_serial) == (_serial(second), _serial(first))
    # within the overlap both connect (an agent that lost the answer can still come back)
    for identity in (first, second):
        link = await identity.online()
        await link.heartbeat()
        await link.close()
    await asyncio.sleep(OVERLAP + 0.2)
    assert await _refused(first) == uplink.ERR_SUPERSEDED
    link = await second.online()
    await link.heartbeat()
    # a renewal from the new certificate makes the first one unusable for good, even inside
    # the next overlap: "previous" is the certificate the renewal came from
    await asyncio.sleep(INTERVAL + 0.2)
    third = await _renew(link, tmp_path / "third")
    await link.close()
    assert await _refused(first) == uplink.ERR_SUPERSEDED
    for identity in (second, third):
        link = await identity.online()
        await link.close()
    # an attempt with a superseded certificate reaches the operator
    _, alerts = await api.call("GET", "/alerts?state=open", owner)
    kinds = [(a["kind"], a["vault_id"]) for a in alerts["items"]]
    assert ("integrity_failure", first.vault_id) in kinds


async def test_renewal_is_rate_limited(api: Api, tmp_path: Path) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    agent = await enroll(api, owner, tmp_path / "agent")
    link = await agent.online()
    renewed = await _renew(link, tmp_path / "renewed")
    serial = (await _vault_row(api, agent.vault_id)).cert_serial
    csr, _key = make_csr("again")
    await link.send({"type": "renew", "csr": csr.decode()})
    refused = await link.recv()
    assert refused["type"] == "error" and refused["code"] == uplink.ERR_RENEWAL
    assert "try again" in refused["message"]
    assert (await _vault_row(api, agent.vault_id)).cert_serial == serial  # nothing changed
    await link.heartbeat()  # the socket is still fine
    await asyncio.sleep(INTERVAL + 0.2)
    await _renew(link, tmp_path / "later")
    assert (await _vault_row(api, agent.vault_id)).cert_serial != serial
    await link.close()
    assert _serial(renewed) == serial


async def test_renewal_of_a_revoked_vault_is_refused(api: Api, tmp_path: Path) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    agent = await enroll(api, owner, tmp_path / "agent")
    link = await agent.online()
    before = await _vault_row(api, agent.vault_id)
    # revoked behind the socket's back (another replica, a direct database write): the next
    # renewal on the still-open socket must not sign anything
    async with api.cp.engine.begin() as conn:
        await conn.execute(
            t.vaults.update().where(t.vaults.c.id == agent.vault_id).values(revoked_at=api.cp.now())
        )
    csr, _key = make_csr("late")
    await link.send({"type": "renew", "csr": csr.decode()})
    code, frames = await link.closed()
    await link.close()
    assert code == uplink.CLOSE_REFUSED and frames[-1]["code"] == uplink.ERR_REVOKED
    assert not [f for f in frames if f["type"] == "certificate"]
    after = await _vault_row(api, agent.vault_id)
    assert (after.cert_serial, after.prev_cert_serial) == (before.cert_serial, None)


@pytest.mark.parametrize("via", ["current", "previous"])
async def test_revoke_closes_the_live_socket_and_refuses_every_certificate(
    api: Api, tmp_path: Path, via: str
) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    first = await enroll(api, owner, tmp_path / "agent")
    link = await first.online()
    second = await _renew(link, tmp_path / "renewed")
    await link.close()
    live = await (second if via == "current" else first).online()
    await live.heartbeat()
    assert (await api.call("POST", f"/vaults/{first.vault_id}/revoke", owner))[0] == 200
    code, frames = await live.closed()
    await live.close()
    assert code == uplink.CLOSE_REFUSED and frames[-1]["code"] == uplink.ERR_REVOKED
    for identity in (first, second):
        assert await _refused(identity) == uplink.ERR_REVOKED
    # both serials are on the organisation's CRL
    org = (await _vault_row(api, first.vault_id)).org_id
    crl = x509.load_pem_x509_crl(await api.cp.vaults.crl(org))
    revoked = {format(r.serial_number, "x") for r in crl}
    assert {_serial(first), _serial(second)} <= revoked


async def test_a_socket_on_a_replaced_certificate_ends_with_the_overlap(
    api: Api, tmp_path: Path
) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    agent = await enroll(api, owner, tmp_path / "agent")
    link = await agent.online()
    renewed = await _renew(link, tmp_path / "renewed")
    await link.heartbeat()  # still served inside the overlap
    code, _ = await link.closed(timeout=OVERLAP + 5)
    await link.close()
    assert code == uplink.CLOSE_REPLACED  # the agent reconnects, with its new certificate
    link = await renewed.online()
    await link.heartbeat()
    await link.close()
