"""The agent gateway: bootstrap and pin, enrollment over TLS, the certificate chain, refusals
before the upgrade, error shapes, and the CLI serving both listeners (real TLS throughout)."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from common import uplink
from common.pki import CertificateAuthority, spki_pin
from common.tls import client_context, write_pem
from tests.control_plane.conftest import Api
from tests.control_plane.mock_agent import bootstrap, enroll, insecure_context, org_id, ws_url


def _constraints(cert: x509.Certificate) -> x509.BasicConstraints:
    return cert.extensions.get_extension_for_class(x509.BasicConstraints).value


async def _get(url: str, ctx: ssl.SSLContext) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        resp = await session.get(url, ssl=ctx)
        return resp.status, await resp.json()


async def test_bootstrap_pin_register_and_chain(api: Api, tmp_path: Path) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    assert api.gateway is not None
    boot = await bootstrap(api.gateway.url)
    service = await api.cp.vaults.cas.service()
    assert boot["pin"] == spki_pin(boot["ca_certificate"]) == service.pin()
    root = x509.load_pem_x509_certificate(boot["ca_certificate"].encode())
    assert root.subject == root.issuer and _constraints(root).path_length == 1

    agent = await enroll(api, owner, tmp_path / "a1")
    chain = x509.load_pem_x509_certificates(agent.chain.read_bytes())
    leaf, org_ca = chain
    assert leaf.subject.rfc4514_string() == f"CN={agent.vault_id}"
    assert _constraints(org_ca).ca and _constraints(org_ca).path_length == 0
    leaf.verify_directly_issued_by(org_ca)
    org_ca.verify_directly_issued_by(root)
    aki = org_ca.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    # /ca still answers with the organisation's CA
    status, ca_info = await api.call("GET", "/ca", owner)
    assert status == 200 and ca_info["pin"] == spki_pin(org_ca)
    # the gateway's own certificate comes from the service CA, for its names, over TLS 1.3 only
    ctx = client_context(ca_pem=boot["ca_certificate"])
    status, health = await _get(api.gateway.url + "/api/v1/health", ctx)
    assert status == 200 and health["status"] == "alive"
    # the enrolled chain verifies under VERIFY_X509_STRICT on both ends: a full uplink works
    link = await agent.online()
    assert link.welcome["vault_id"] == agent.vault_id
    await link.close()


async def test_tls12_and_foreign_certificates_are_refused(api: Api, tmp_path: Path) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    assert api.gateway is not None
    agent = await enroll(api, owner, tmp_path / "a1")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(aiohttp.ClientError):
        await _get(api.gateway.url + "/api/v1/health", old)
    # a client certificate from a CA the service CA never signed fails the handshake
    foreign = CertificateAuthority.create("Foreign CA")
    cert, key = foreign.issue_client_cert(agent.vault_id)
    crt = write_pem(tmp_path / "f.crt", cert + foreign.cert_pem())
    pem = write_pem(tmp_path / "f.key", key, private=True)
    ctx = client_context(ca_pem=agent.service_ca_pem, cert_file=crt, key_file=pem)
    with pytest.raises((aiohttp.ClientError, ConnectionError)):
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(ws_url(agent.gateway_url), ssl=ctx)
            await ws.receive(timeout=5)
    # another organisation's CA cannot vouch for this vault (same CN, signed by globex's CA)
    other = await api.org("Globex", "owner@globex.test")
    await enroll(api, other, tmp_path / "g1")
    globex_ca = await api.cp.vaults.cas.get(await org_id(api, other))
    cert, key = globex_ca.issue_client_cert(agent.vault_id)
    crt = write_pem(tmp_path / "g.crt", cert + globex_ca.cert_pem())
    pem = write_pem(tmp_path / "g.key", key, private=True)
    ctx = client_context(ca_pem=agent.service_ca_pem, cert_file=crt, key_file=pem)
    status, body = await _get(agent.gateway_url + uplink.UPLINK_PATH, ctx)
    assert status == 403 and body["error"]["code"] == uplink.ERR_UNKNOWN_VAULT


async def test_upgrade_refusals(api: Api, tmp_path: Path) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    agent = await enroll(api, owner, tmp_path / "a1")
    url = agent.gateway_url + uplink.UPLINK_PATH
    # no client certificate: 401 (and the WebSocket handshake fails the same way)
    status, body = await _get(url, agent.ssl(cert=False))
    assert status == 401 and body["error"]["code"] == uplink.ERR_NO_CERTIFICATE
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await agent.connect(cert=False)
    assert info.value.status == 401
    # a certificate for a vault the control plane does not know
    org_ca = await api.cp.vaults.cas.get(await org_id(api, owner))
    cert, key = org_ca.issue_client_cert("vlt_nosuchvault")
    crt = write_pem(tmp_path / "u.crt", cert + org_ca.cert_pem())
    pem = write_pem(tmp_path / "u.key", key, private=True)
    ctx = client_context(ca_pem=agent.service_ca_pem, cert_file=crt, key_file=pem)
    status, body = await _get(url, ctx)
    assert status == 403 and body["error"]["code"] == uplink.ERR_UNKNOWN_VAULT
    # a revoked vault: 403 before the upgrade
    assert (await api.call("POST", f"/vaults/{agent.vault_id}/revoke", owner))[0] == 200
    status, body = await _get(url, agent.ssl())
    assert status == 403 and body["error"]["code"] == uplink.ERR_REVOKED
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await agent.connect()
    assert info.value.status == 403
    # the certificate alone without the WebSocket upgrade: a 400, not a 500
    other = await enroll(api, owner, tmp_path / "a2", "vault-2")
    status, body = await _get(url, other.ssl())
    assert status == 400 and set(body) == {"error"}


async def test_gateway_routes_and_error_shapes(api: Api, tmp_path: Path) -> None:
    await api.org("Acme", "owner@acme.test")
    assert api.gateway is not None
    base = api.gateway.url
    ctx = insecure_context()
    async with aiohttp.ClientSession() as session:
        resp = await session.get(base + "/api/v1/nope", ssl=ctx)
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
        resp = await session.post(
            base + uplink.REGISTER_PATH,
            data=b"{not json",
            headers={"Content-Type": "application/json"},
            ssl=ctx,
        )
        assert resp.status == 400 and set(await resp.json()) == {"error"}
        resp = await session.post(
            base + uplink.REGISTER_PATH,
            json={"token": "kve_" + "A" * 43 + "." + "0" * 64, "csr": "x", "name": "a"},
            ssl=ctx,
        )
        assert resp.status == 400
        resp = await session.delete(base + uplink.BOOTSTRAP_PATH, ssl=ctx)
        assert resp.status == 405 and set(await resp.json()) == {"error"}
    await bootstrap(base)
    _status, text = await api.call("GET", "/metrics")
    assert 'keyvault_cp_requests_total{route="gateway.bootstrap",status="200"} 1' in text
    assert "keyvault_cp_uplink_connections 0" in text


async def test_cli_run_serves_both_listeners(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KEYVAULT_CP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cp.db'}",
        "KEYVAULT_CP_CA_KEY_PASSPHRASE": "cli-ca-passphrase",
        "KEYVAULT_CP_PORT": "0",
        "KEYVAULT_CP_GATEWAY_PORT": "0",
        # its own temp folder: other workers' gateways keep theirs in the shared one meanwhile
        "TMPDIR": str(tmp_path / "tmp"),
    }
    (tmp_path / "tmp").mkdir()
    env.pop("KEYVAULT_CP_REDIS_URL", None)
    ready = tmp_path / "ready.json"
    cli = "from control_plane.cli import control_plane_group; control_plane_group()"
    log = open(tmp_path / "cp.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", cli, "run", "--ready-file", str(ready)],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        for _ in range(300):
            if ready.exists() or proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert ready.exists(), (tmp_path / "cp.log").read_text()[-2000:]
        urls = json.loads(ready.read_text())
        assert urls["api_url"].startswith("http://127.0.0.1:")
        assert urls["gateway_url"].startswith("https://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            resp = await session.get(urls["api_url"] + "/api/v1/health")
            assert resp.status == 200
        boot = await bootstrap(urls["gateway_url"])
        assert boot["pin"] == spki_pin(boot["ca_certificate"])
        status, _ = await _get(
            urls["gateway_url"] + "/api/v1/health", client_context(ca_pem=boot["ca_certificate"])
        )
        assert status == 200
    finally:
        proc.terminate()
        code = proc.wait(20)
        log.close()
    assert code == 0, (tmp_path / "cp.log").read_text()[-2000:]
    output = (tmp_path / "cp.log").read_text()
    assert urls["api_url"] in output and urls["gateway_url"] in output
    assert not list((tmp_path / "tmp").glob("keyvault-gateway-*/server.key"))


def test_gateway_settings() -> None:
    from control_plane.settings import ControlPlaneSettings

    defaults = ControlPlaneSettings.model_validate({})
    assert (defaults.gateway_bind, defaults.gateway_port) == ("127.0.0.1", 8444)
    assert defaults.gateway_names == ["localhost", "127.0.0.1", "::1"]
    assert (defaults.uplink_heartbeat_seconds, defaults.cert_expiry_alert_hours) == (30, 6)
    # unset, they follow the settings they must stay below
    short = ControlPlaneSettings.model_validate({"offline_after_seconds": 6, "cert_valid_hours": 2})
    assert (short.uplink_heartbeat_seconds, short.cert_expiry_alert_hours) == (2, 0.5)
    for bad in (
        {"offline_after_seconds": 6, "uplink_heartbeat_seconds": 6},
        {"cert_valid_hours": 6, "cert_expiry_alert_hours": 6},
        {"gateway_names": []},
        {"gateway_names": ["bad name"]},
        {"gateway_port": 70000},
    ):
        with pytest.raises(ValueError):
            ControlPlaneSettings.model_validate(bad)
