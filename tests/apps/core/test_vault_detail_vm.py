"""VaultDetailViewModel: inventory with names opened locally, commands, events."""

from __future__ import annotations

import pytest

from apps.core.labels import LabelOpener
from apps.core.viewmodels.vault_detail import SEALED_NAME, VaultDetailViewModel
from common.errors import ConfigError, ConflictError, NotFoundError, UnavailableError
from common.metadata_key import MetadataKey
from tests.apps.fake_cp import FakeControlPlane


def setup(with_key: bool = True) -> tuple[FakeControlPlane, str, VaultDetailViewModel]:
    fake = FakeControlPlane()
    vault_id = fake.add_vault("web-1", secrets=0)
    pol = fake.seed(policies=1)
    policy_id = next(iter(pol.policies))
    fake.add_secret(vault_id, "prod/db/password", {"team": "billing"}, policy_id=policy_id)
    fake.add_secret(vault_id, "api/token")
    fake.add_secret(vault_id, None)  # the agent has no metadata key: no label
    fake.add_secret(vault_id, "other", key=MetadataKey.generate())  # another org's key
    opener = LabelOpener(fake.key if with_key else None, vault_id)
    return fake, vault_id, VaultDetailViewModel(fake, vault_id, opener)  # type: ignore[arg-type]


async def test_refresh_opens_names_and_marks_the_rest_sealed() -> None:
    _fake, vault_id, vm = setup()
    await vm.refresh()
    state = vm.state
    assert state.error is None and state.has_key and state.vault is not None
    assert state.vault.id == vault_id and state.vault.name == "web-1"
    names = [(r.name, r.sealed) for r in state.items]
    assert names == [("api/token", False), ("prod/db/password", False)] + [(SEALED_NAME, True)] * 2
    db = state.items[1]
    assert db.labels == (("team", "billing"),)
    assert db.policy_id is not None and db.rotation_state == "ok"
    assert db.last_rotated_at is not None and db.next_due_at is not None
    assert db.next_due_at.tzinfo is not None and not db.deleted
    assert state.items[0].rotation_state is None and state.items[0].policy_id is None
    assert all(r.secret_id.startswith("sec_") for r in state.items)


async def test_without_the_key_every_name_is_sealed() -> None:
    _, _, vm = setup(with_key=False)
    await vm.refresh()
    assert not vm.state.has_key
    assert {(r.name, r.sealed, r.labels) for r in vm.state.items} == {(SEALED_NAME, True, ())}


async def test_rotate_and_resync_add_commands_and_results_arrive_as_events() -> None:
    fake, _vault_id, vm = setup()
    await vm.refresh()
    secret_id = vm.state.items[0].secret_id
    command = await vm.rotate(secret_id)
    assert command["command"] == "rotate" and command["args"] == {"secret_id": secret_id}
    assert vm.state.commands[0].id == command["id"] and vm.state.commands[0].state == "pending"
    assert vm.state.commands[0].secret_id == secret_id
    resync = await vm.resync()
    assert [c.id for c in vm.state.commands] == [resync["id"], command["id"]]
    result = fake.finish_command(command["id"], "failed", "database_unreachable")
    assert vm.apply_event("command.result", result)
    done = next(c for c in vm.state.commands if c.id == command["id"])
    assert (done.state, done.result) == ("failed", "database_unreachable")
    assert not vm.apply_event("command.result", result)  # same again: nothing changes
    other = dict(result, vault_id="vlt_other")
    assert not vm.apply_event("command.result", other)
    await vm.refresh()
    assert {c.id for c in vm.state.commands} == {command["id"], resync["id"]}


async def test_status_events_for_this_vault_only() -> None:
    _, vault_id, vm = setup()
    await vm.refresh()
    assert vm.apply_event("vault.status", {"vault_id": vault_id, "status": "revoked"})
    assert vm.state.vault is not None and vm.state.vault.revoked
    assert not vm.apply_event("vault.status", {"vault_id": "vlt_x", "status": "offline"})


async def test_errors_go_to_state_on_refresh_but_raise_on_actions() -> None:
    fake, vault_id, vm = setup()
    await vm.refresh()
    fake.fail_next(UnavailableError("cannot reach the control plane at http://cp.test: down"))
    await vm.refresh()
    assert vm.state.error is not None and "cannot reach" in vm.state.error
    assert len(vm.state.items) == 4
    await fake.revoke_vault(vault_id)
    with pytest.raises(ConflictError, match="revoked"):
        await vm.resync()
    blind = VaultDetailViewModel(fake, "vlt_gone", LabelOpener(None, "vlt_gone"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="metadata-key import"):  # nothing unsealed is sent
        await blind.rotate("sec_1")
    missing = VaultDetailViewModel(fake, "vlt_gone", LabelOpener(fake.key, "vlt_gone"))  # type: ignore[arg-type]
    await missing.refresh()
    assert missing.state.error == "no vault vlt_gone" and missing.state.vault is None
    with pytest.raises(NotFoundError):
        await missing.rotate("sec_1")
