"""Shell: a real session against a real control plane, events routed live, a clean close."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve

from apps.core.agents import AgentProfile, AgentTokenMissingError
from apps.core.keyring_store import CredentialStore
from apps.core.session import Profile, Session
from apps.core.shell import Shell
from tests.apps.conftest import OWNER, PASSWORD, LiveControlPlane
from tests.apps.core.test_stream import until
from tests.apps.fake_cp import FakeControlPlane


def other_tasks() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_live_session_loads_and_follows_events(
    keyring_env: dict[str, str], live_cp: LiveControlPlane
) -> None:
    first = await asyncio.to_thread(live_cp.enroll_vault, "web-1")
    session = await asyncio.to_thread(Session.login, live_cp.url, OWNER, PASSWORD)
    shell = Shell.from_session(session)
    statuses: list[bool] = []
    shell.on_status(statuses.append)
    await shell.start()
    try:
        assert [r.id for r in shell.vaults.state.rows] == [first]
        assert shell.vaults.state.rows[0].status == "pending" and shell.alerts.state.error is None
        await until(lambda: shell.online)
        assert statuses == [True]
        detail = shell.vault_detail(first)
        await detail.refresh()
        assert detail.state.vault is not None and detail.state.vault.name == "web-1"

        loads: list[int] = []
        original = shell.client.iter_vaults

        def counting(*args: Any, **kw: Any) -> Any:
            loads.append(1)
            return original(*args, **kw)

        shell.client.iter_vaults = counting  # type: ignore[method-assign]
        second = await asyncio.to_thread(live_cp.enroll_vault, "db-1")
        await until(lambda: shell.vaults.row(second) is not None)
        assert shell.vaults.row(second).name == "db-1"  # type: ignore[union-attr]

        cp = live_cp.cp
        await asyncio.to_thread(live_cp.server.run, cp.vaults.heartbeat(first, {}))
        await until(lambda: shell.vaults.row(first).status == "online")  # type: ignore[union-attr]
        await until(lambda: detail.state.vault.status == "online")  # type: ignore[union-attr]

        raised = cp.alerts.raise_alert(
            live_cp.org_id,
            "vault_offline",
            f"vault_offline:{first}",
            "web-1 is silent",
            severity="critical",
            vault_id=first,
        )
        await asyncio.to_thread(live_cp.server.run, raised)
        await until(lambda: shell.alerts.state.unread == 1)
        assert shell.alerts.state.rows[0].message == "web-1 is silent"
        assert loads == []  # all of it came from the stream, none from a reload
    finally:
        await shell.close()
    assert other_tasks() == set()
    assert not shell.online and statuses == [True, False]


async def test_logout_revokes_and_forgets(
    keyring_env: dict[str, str], live_cp: LiveControlPlane
) -> None:
    session = await asyncio.to_thread(Session.login, live_cp.url, OWNER, PASSWORD)
    shell = Shell.from_session(session)
    await shell.start()
    assert await shell.logout() is True
    assert CredentialStore().get_session_token(live_cp.url, OWNER) is None
    resp = await asyncio.to_thread(
        httpx.get, live_cp.url + "/api/v1/me", headers={"Authorization": f"Bearer {session.token}"}
    )
    assert resp.status_code == 401
    assert other_tasks() == set()


def fake_shell(url: str) -> tuple[Shell, FakeControlPlane]:
    fake = FakeControlPlane().seed(vaults=3, secrets=2, alerts=2)
    profile = Profile(url, OWNER, org_id="org_acme", gateway_url="https://gw.test:8443")
    store = CredentialStore.memory()
    store.set_metadata_key("org_acme", fake.key)  # the apps seal commands with it
    session = Session(profile, store, "kvs_fake")
    shell = Shell(session, fake)  # type: ignore[arg-type]
    shell.stream.initial_delay = 0.02
    return shell, fake


async def test_reconnect_reloads_vaults_and_alerts_and_routes_every_kind() -> None:
    connections: list[ServerConnection] = []

    async def handler(ws: ServerConnection) -> None:
        connections.append(ws)
        await ws.send(json.dumps({"type": "hello"}))
        if len(connections) == 1:
            await asyncio.sleep(0.2)
            await ws.close(1012, "restart")
            return
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        shell, fake = fake_shell(f"http://127.0.0.1:{port}")
        statuses: list[bool] = []
        unsubscribe = shell.on_status(statuses.append)
        await shell.start()
        await until(lambda: statuses == [True, False, True])
        unsubscribe()
        await until(lambda: len(fake.called("list_alerts")) == 2)
        assert len(fake.called("list_vaults")) == 2  # the first load and one after the reconnect

        detail = shell.vault_detail("vlt_000001")
        await detail.refresh()
        command = await detail.rotate(fake.inventories["vlt_000001"][0]["secret_id"])
        shell.route_event("command.result", fake.finish_command(command["id"]))
        assert detail.state.commands[0].state == "succeeded"
        policy = await fake.create_policy(FakeControlPlane._policy_doc("nightly", 86400))
        shell.route_event("policy.created", policy)
        assert [r.id for r in shell.policies.state.rows] == [policy["id"]]
        shell.route_event("org.metadata_key", {"fingerprint": "x"})  # nothing listens: ignored
        assert shell.enrollment.gateway_url == "https://gw.test:8443"
        await shell.close()
    assert other_tasks() == set() and fake.closed and statuses == [True, False, True]


async def test_agent_secrets_uses_the_saved_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    shell, _ = fake_shell("http://127.0.0.1:9")
    agent = AgentProfile.from_data_dir("laptop", "https://127.0.0.1:8443", tmp_path / "agent")
    with pytest.raises(AgentTokenMissingError):
        shell.agent_secrets(agent)
    shell.agents.save(agent, "kva_token")
    model = shell.agent_secrets(agent)
    assert model.agent == agent and "kva_token" not in repr(model)

    class Client:
        closed = False

        async def aclose(self) -> None:
            self.closed = True

    client = model._client = Client()
    await shell.close()
    assert client.closed  # the shell closes agent connections a screen left open


async def test_close_without_start_and_auth_failure_reports_offline() -> None:
    shell, fake = fake_shell("http://127.0.0.1:9")
    await shell.close()
    assert fake.closed and other_tasks() == set()

    async def refuse(ws: ServerConnection) -> None:
        await ws.close(4401, "session ended")

    async with serve(refuse, "127.0.0.1", 0) as server:
        shell, _ = fake_shell(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        statuses: list[bool] = []
        shell.on_status(statuses.append)
        await shell.start()
        await until(lambda: shell.stream.last_error is not None)
        assert statuses == [False] and shell.stream.last_error == "session expired; log in again"
        await shell.close()
    assert other_tasks() == set()


async def test_an_inventory_change_reloads_only_that_vaults_open_detail_view() -> None:
    shell, fake = fake_shell("http://127.0.0.1:9")
    detail = shell.vault_detail("vlt_000001")
    other = shell.vault_detail("vlt_000002")
    await detail.refresh()
    await other.refresh()
    secret = {**fake.inventories["vlt_000001"][0], "secret_id": "sec_added", "version": 1}
    fake.inventories["vlt_000001"].append(secret)
    before = len(fake.called("inventory"))
    shell.route_event("inventory.changed", {"vault_id": "vlt_000001", "items": 1})
    await until(lambda: any(row.secret_id == "sec_added" for row in detail.state.items))
    assert len(fake.called("inventory")) == before + 1  # the other vault was not reloaded
    await shell.close()
