"""The operator-API client against a real control plane (and, for the command and inventory
routes, the stub in fleet_stub.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import errors as e
from common.cpclient import AsyncControlPlaneClient, ControlPlaneClient, TooManyAttemptsError
from common.metadata_key import MetadataKey
from tests.apps.conftest import OWNER, PASSWORD, LiveControlPlane, LiveServer, start_control_plane
from tests.apps.fleet_stub import TOKEN, FleetStub


def test_session_tokens_and_vaults(live_cp: LiveControlPlane) -> None:
    with ControlPlaneClient(live_cp.url) as cp:
        assert cp.token is None
        session = cp.login(OWNER, PASSWORD)
        assert session["token"].startswith("kvs_") and cp.token == session["token"]
        assert session["token"] not in repr(cp)
        me = cp.me()
        assert me["user"]["email"] == OWNER and me["org"]["id"] == live_cp.org_id
        assert me["org"]["metadata_key_fingerprint"] is None

        created = cp.create_enrollment_token("for web-1", ttl_seconds=600)
        assert created["token"].startswith("kve_")
        listed = cp.list_enrollment_tokens()["items"]
        assert [t["id"] for t in listed] == [created["id"]]
        assert "token" not in listed[0]
        assert cp.revoke_enrollment_token(created["id"])["state"] == "revoked"

        assert cp.list_vaults() == {"items": [], "next_cursor": None}
        vault_id = live_cp.enroll_vault("web-1")
        assert [v["id"] for v in cp.iter_vaults()] == [vault_id]
        assert cp.get_vault(vault_id)["name"] == "web-1"
        assert cp.revoke_vault(vault_id)["revoked_at"] is not None
        with pytest.raises(e.NotFoundError):
            cp.get_vault("vlt_nope")

        key = MetadataKey.generate()
        assert cp.put_metadata_key(key.fingerprint)["fingerprint"] == key.fingerprint
        assert cp.me()["org"]["metadata_key_fingerprint"] == key.fingerprint
        assert cp.list_alerts(state="open")["items"] == []
        assert cp.health()

        assert cp.logout() is None
        with pytest.raises(e.AuthenticationError, match="log in again"):
            cp.me()


def test_errors_map_to_our_classes(live_cp: LiveControlPlane) -> None:
    viewer = ControlPlaneClient(
        live_cp.url, live_cp.token(live_cp.member("v@example.com", "viewer"))
    )
    with viewer, pytest.raises(e.PermissionDeniedError, match="owner"):
        viewer.put_metadata_key(MetadataKey.generate().fingerprint)

    with ControlPlaneClient(live_cp.url) as cp:
        with pytest.raises(e.AuthenticationError) as info:
            cp.login(OWNER, "wrong password")
        assert info.value.exit_code == 77 and "wrong e-mail address or password" in str(info.value)
        assert "wrong password" not in info.value.message
        with pytest.raises(e.AuthenticationError):
            cp.me()  # not logged in
        with pytest.raises(e.ValidationError, match="command must be one of"):
            cp.create_command("vlt_x", "format-disk")
        with pytest.raises(TooManyAttemptsError, match="try again in") as locked:
            for _ in range(5):
                with pytest.raises(e.AuthenticationError):
                    cp.login(OWNER, "wrong password")
        assert locked.value.http_status == 429 and locked.value.exit_code == 69


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_and_bad_urls() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with ControlPlaneClient(url) as cp, pytest.raises(e.UnavailableError) as info:
        cp.login(OWNER, PASSWORD)
    assert info.value.message.startswith(f"cannot reach the control plane at {url}")
    assert PASSWORD not in info.value.message
    with pytest.raises(e.ValidationError, match="must start with https://"):
        ControlPlaneClient("cp.example.com")
    with pytest.raises(e.ConfigError, match="does not exist"):
        ControlPlaneClient("https://cp.example.com", ca_file="/no/such/ca.pem")


@pytest.fixture
def tls_cp(tmp_path: Path) -> Iterator[tuple[LiveControlPlane, Path]]:
    from common.pki import CertificateAuthority
    from common.tls import server_context

    ca = CertificateAuthority.create("test root")
    cert, key = ca.issue_server_cert(["localhost"])
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    (tmp_path / "srv.pem").write_bytes(cert)
    (tmp_path / "srv.key").write_bytes(key)
    ctx = server_context(tmp_path / "srv.pem", tmp_path / "srv.key")
    running = start_control_plane(tmp_path, ssl_context=ctx)
    try:
        yield running, tmp_path / "ca.pem"
    finally:
        running.server.stop()


def test_tls_with_a_ca_file_or_context(tls_cp: tuple[LiveControlPlane, Path]) -> None:
    from common.cpclient import tls_context

    live, ca_file = tls_cp
    assert live.url.startswith("https://")
    with ControlPlaneClient(live.url, ca_file=ca_file) as cp:
        cp.login(OWNER, PASSWORD)
        assert cp.me()["user"]["email"] == OWNER
    with ControlPlaneClient(live.url, ssl_context=tls_context(ca_file)) as cp:
        assert cp.health()
    with ControlPlaneClient(live.url) as cp, pytest.raises(e.UnavailableError, match="--ca-file"):
        cp.health()  # the system CAs do not know the test CA


async def test_async_client(live_cp: LiveControlPlane) -> None:
    async with AsyncControlPlaneClient(live_cp.url) as cp:
        await cp.login(OWNER, PASSWORD)
        assert (await cp.me())["org"]["id"] == live_cp.org_id
        created = await cp.create_enrollment_token()
        assert created["id"] in [t["id"] for t in (await cp.list_enrollment_tokens())["items"]]
        vaults = [v async for v in cp.iter_vaults()]
        assert vaults == []
        await cp.logout()
        with pytest.raises(e.AuthenticationError):
            await cp.me()
    async with AsyncControlPlaneClient(f"http://127.0.0.1:{_free_port()}") as cp:
        with pytest.raises(e.UnavailableError):
            await cp.health()


# ---------------------------------------------------------------- commands and inventory (stub)


@pytest.fixture
def stub() -> Iterator[tuple[FleetStub, str]]:
    state = FleetStub()
    server = LiveServer(state.app())
    try:
        yield state, server.url
    finally:
        server.stop()


def test_commands_against_the_stub(stub: tuple[FleetStub, str]) -> None:
    state, url = stub
    with ControlPlaneClient(url, TOKEN) as cp:
        cmd = cp.rotate_secret(state.vault_id, "sec_0001")
        assert cmd["state"] == "pending" and cmd["command"] == "rotate"
        assert state.seen_bodies[-1] == {"command": "rotate", "args": {"secret_id": "sec_0001"}}
        resync = cp.resync(state.vault_id)
        assert state.seen_bodies[-1] == {"command": "resync", "args": {}}
        assert [c["id"] for c in cp.list_commands(state.vault_id)["items"]] == [
            cmd["id"],
            resync["id"],
        ]
        assert cp.get_command(cmd["id"])["state"] == "sent"
        assert cp.get_command(cmd["id"])["state"] == "succeeded"
        with pytest.raises(e.NotFoundError):
            cp.create_command("vlt_other", "resync")
    with ControlPlaneClient(url, "kvs_wrong") as cp, pytest.raises(e.AuthenticationError):
        cp.resync(state.vault_id)


async def test_inventory_pages_against_the_stub(stub: tuple[FleetStub, str]) -> None:
    state, url = stub
    state.add_secrets([f"app/{i}" for i in range(7)], MetadataKey.generate())
    with ControlPlaneClient(url, TOKEN) as cp:
        first = cp.inventory(state.vault_id, limit=3)
        assert len(first["items"]) == 3 and first["next_cursor"] == "sec_0002"
        assert [i["secret_id"] for i in cp.iter_inventory(state.vault_id, page_size=3)] == [
            f"sec_{i:04d}" for i in range(7)
        ]
    async with AsyncControlPlaneClient(url, TOKEN) as acp:
        items = [i async for i in acp.iter_inventory(state.vault_id, page_size=2)]
        assert len(items) == 7
