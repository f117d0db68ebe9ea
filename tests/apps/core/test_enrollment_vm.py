"""EnrollmentViewModel against a real control plane; the printed command really enrolls an agent."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from apps.core.viewmodels.enrollment import (
    GATEWAY_PLACEHOLDER,
    EnrollmentViewModel,
    enroll_command,
)
from common import errors as e
from common.cpclient import AsyncControlPlaneClient
from tests.apps.conftest import LiveControlPlane
from tests.apps.fake_cp import FakeControlPlane, iso


def _gateway(live: LiveControlPlane) -> str:
    from control_plane.gateway.app import GATEWAY

    return str(live.server.app[GATEWAY].url)


async def test_create_list_revoke(live_cp: LiveControlPlane) -> None:
    gateway = _gateway(live_cp)
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        vm = EnrollmentViewModel(cp, gateway)
        await vm.refresh()
        assert vm.state.tokens == () and vm.state.error is None

        created = await vm.create("  web-1 host  ", 2)
        assert created.token.startswith("kve_") and created.id.startswith("enr_")
        assert created.command == (
            f"keyvault agent enroll --control-plane {gateway} --token {created.token}"
        )
        assert created.expires_at is not None and created.expires_at.tzinfo is not None
        assert vm.state.created == created
        for text in (repr(vm.state), repr(created), str(vm.state)):
            assert created.token not in text

        await vm.refresh()
        [row] = vm.state.tokens
        assert (row.id, row.description, row.state) == (created.id, "web-1 host", "active")
        assert vm.state.created == created  # shown until the person dismisses it
        vm.clear_created()
        assert vm.state.created is None

        revoked = await vm.revoke(created.id)
        assert revoked.state == "revoked" and vm.state.tokens == (revoked,)
        with pytest.raises(e.NotFoundError):
            await vm.revoke("enr_nope")


def test_the_command_enrolls_a_real_agent(live_cp: LiveControlPlane, tmp_path: Path) -> None:
    """Run exactly the line shown (plus the agent's data folder) through the real CLI."""
    from apps.cli.main import cli
    from tests.conftest import init_agent_dir

    agent = init_agent_dir(tmp_path / "agent")

    async def make() -> str:
        async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
            return (await EnrollmentViewModel(cp, _gateway(live_cp)).create("", 1)).command

    command = asyncio.run(make())
    argv = shlex.split(command)
    assert argv[:3] == ["keyvault", "agent", "enroll"]
    result = CliRunner().invoke(cli, [*argv[1:], "--data-dir", str(agent.path), "--name", "web-1"])
    assert result.exit_code == 0, result.output
    assert "enrolled as vault vlt_" in result.output


def test_without_a_gateway_url_the_command_has_a_placeholder() -> None:
    line = enroll_command(None, "kve_abc.def")
    assert (
        line == f"keyvault agent enroll --control-plane {GATEWAY_PLACEHOLDER} --token kve_abc.def"
    )
    assert enroll_command("https://gw.example.com:8444/", "t") == (
        "keyvault agent enroll --control-plane https://gw.example.com:8444 --token t"
    )


async def test_bad_input_is_tagged_before_any_request() -> None:
    fake = FakeControlPlane()
    vm = EnrollmentViewModel(fake, None)
    for ttl in ("soon", 0, 169, "0.001"):
        with pytest.raises(e.ValidationError) as info:
            await vm.create("x", ttl)
        assert info.value.details == {"field": "ttl_hours"}
    with pytest.raises(e.ValidationError) as info:
        await vm.create("d" * 201, 1)
    assert info.value.details == {"field": "description"}
    assert fake.called("create_enrollment_token") == []
    created = await vm.create("half an hour", "0.5")
    assert fake.called("create_enrollment_token") == [(("half an hour", 1800), {})]
    assert GATEWAY_PLACEHOLDER in created.command


async def test_a_failed_list_keeps_the_tokens() -> None:
    fake = FakeControlPlane()
    vm = EnrollmentViewModel(fake, None)
    await vm.create("one", 1)
    await vm.refresh()
    fake.fail_next(e.PermissionDeniedError("admins only"))
    await vm.refresh()
    assert vm.state.error == "admins only" and len(vm.state.tokens) == 1


async def test_the_new_agent_is_followed_from_token_to_first_inventory() -> None:
    """Through the shell's event routing: pending → connected → first inventory, and the
    reason when the control plane refuses the agent."""

    from tests.apps.fake_shell import build_fake_shell

    fake = FakeControlPlane()
    shell = build_fake_shell(fake)
    await shell.start()
    try:
        vm = shell.enrollment
        created = await vm.create("", 1, name="payments-prod")
        # the one command: gateway, token, the vault's name and the metadata-key step
        assert created.command.endswith(
            " --name payments-prod --metadata-key-file keyvault-metadata.key"
        )
        assert vm.state.follow is not None and vm.state.follow.stage == "waiting"
        assert vm.state.follow.text == "waiting for the agent to enroll with the token"

        async def settle() -> None:
            for _ in range(5):
                await asyncio.sleep(0)

        other = fake.add_vault("someone-else", status="pending")
        shell.route_event("vault.registered", {"vault_id": other, "name": "someone-else"})
        await settle()
        assert vm.state.follow.stage == "waiting"  # not our token's vault

        vault_id = fake.add_vault("payments-prod", status="pending")
        fake.tokens[created.id].update(state="used", vault_id=vault_id, used_at=iso(fake.now))
        shell.route_event("vault.registered", {"vault_id": vault_id, "name": "payments-prod"})
        await settle()
        assert (vm.state.follow.stage, vm.state.follow.vault_id) == ("enrolled", vault_id)

        shell.route_event(
            "vault.refused",
            {"vault_id": vault_id, "code": "metadata_key", "message": "its metadata key differs"},
        )
        await settle()
        assert vm.state.follow.text == (
            "the control plane refused the agent: its metadata key differs"
        )
        shell.route_event("vault.status", {"vault_id": vault_id, "status": "online"})
        await settle()
        assert vm.state.follow.stage == "connected" and vm.state.follow.reason is None
        shell.route_event("inventory.changed", {"vault_id": vault_id, "secrets": 4})
        await settle()
        assert vm.state.follow.text == "ready: 4 secrets reported"
    finally:
        await shell.close()


async def test_a_bad_vault_name_is_tagged_before_any_request() -> None:
    fake = FakeControlPlane()
    vm = EnrollmentViewModel(fake, None)
    with pytest.raises(e.ValidationError) as info:
        await vm.create("", 1, name="no spaces please")
    assert info.value.details == {"field": "name"}
    assert fake.called("create_enrollment_token") == []


async def test_a_refusal_that_comes_before_the_registration_is_known_is_kept() -> None:
    """The gateway can refuse the agent while the app still looks up which vault the token
    registered: the refusal is kept and shown once that vault is known, not dropped."""
    from tests.apps.fake_shell import build_fake_shell

    fake = FakeControlPlane()
    shell = build_fake_shell(fake)
    await shell.start()
    try:
        vm = shell.enrollment
        created = await vm.create("", 1, name="payments-prod")
        vault_id = fake.add_vault("payments-prod", status="pending")
        fake.tokens[created.id].update(state="used", vault_id=vault_id, used_at=iso(fake.now))
        refused = {"vault_id": vault_id, "code": "metadata_key", "message": "key differs"}
        shell.route_event("vault.refused", {**refused, "vault_id": "vlt_someone_else"})
        shell.route_event("vault.refused", refused)  # before the registration is looked up
        shell.route_event("vault.registered", {"vault_id": vault_id, "name": "payments-prod"})
        for _ in range(10):
            await asyncio.sleep(0)
        assert vm.state.follow is not None
        assert vm.state.follow.text == "the control plane refused the agent: key differs"
    finally:
        await shell.close()
