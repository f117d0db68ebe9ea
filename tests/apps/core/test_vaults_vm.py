"""VaultsViewModel over the in-memory control plane: loading, filter, sort, events, errors."""

from __future__ import annotations

from datetime import UTC

import pytest

from apps.core.viewmodels.vaults import VaultRow, VaultsViewModel
from common.errors import NotFoundError, UnavailableError, ValidationError
from tests.apps.fake_cp import FakeControlPlane


async def loaded(vaults: int = 20) -> tuple[FakeControlPlane, VaultsViewModel]:
    fake = FakeControlPlane().seed(vaults=vaults)
    vm = VaultsViewModel(fake)  # type: ignore[arg-type]
    await vm.refresh()
    return fake, vm


async def test_refresh_pages_through_every_vault_and_parses_rows() -> None:
    fake, vm = await loaded(450)
    assert vm.state.total == 450 and len(vm.state.rows) == 450 and len(vm.state.visible) == 450
    assert len(fake.called("list_vaults")) == 3  # pages of 200
    assert not vm.state.loading and vm.state.error is None
    first = vm.row("vlt_000001")
    assert first is not None
    doc = fake.vaults["vlt_000001"]
    assert first.name == doc["name"] and first.status == "online"
    assert first.version == doc["agent_version"]
    assert first.secret_count == doc["health"]["counts"]["secrets"]
    assert first.last_seen is not None and first.last_seen.tzinfo is not None
    assert first.cert_expiry is not None and first.cert_expiry.tzinfo == UTC
    revoked = [r for r in vm.state.rows if r.status == "revoked"]
    assert revoked and all(r.revoked for r in revoked)
    pending = [r for r in vm.state.rows if r.status == "pending"]
    assert pending and all(r.last_seen is None for r in pending)


async def test_listeners_see_loading_then_rows() -> None:
    fake = FakeControlPlane().seed(vaults=3)
    seen: list[tuple[bool, int]] = []
    vm = VaultsViewModel(fake, on_change=lambda s: seen.append((s.loading, s.total)))  # type: ignore[arg-type]
    await vm.refresh()
    assert seen[0] == (True, 0)
    assert seen[-1] == (False, 3)


async def test_filter_is_a_case_insensitive_substring_of_name_id_status_version() -> None:
    _, vm = await loaded(20)
    vm.set_filter("WEB")
    assert vm.state.visible and all("web" in r.name for r in vm.state.visible)
    assert vm.state.filter == "WEB" and vm.state.total == 20
    vm.set_filter("vlt_000007")
    assert [r.id for r in vm.state.visible] == ["vlt_000007"]
    vm.set_filter("offline")
    assert vm.state.visible and {r.status for r in vm.state.visible} == {"offline"}
    vm.set_filter("0.2.0")
    assert vm.state.visible and {r.version for r in vm.state.visible} == {"0.2.0"}
    vm.set_filter("no such thing")
    assert vm.state.visible == ()
    vm.set_filter("")
    assert len(vm.state.visible) == 20


async def test_sort_toggles_on_the_same_column_and_keeps_missing_values_last() -> None:
    _, vm = await loaded(20)
    names = [r.name.lower() for r in vm.state.visible]
    assert names == sorted(names) and vm.state.sort == "name" and not vm.state.descending
    vm.set_sort("name")
    assert vm.state.descending
    assert [r.name.lower() for r in vm.state.visible] == sorted(names, reverse=True)
    vm.set_sort("last_seen")
    assert vm.state.sort == "last_seen" and not vm.state.descending
    for descending in (False, True):
        vm.set_sort("last_seen", descending=descending)
        seen = [r.last_seen for r in vm.state.visible]
        known = [s for s in seen if s is not None]
        assert seen[: len(known)] == sorted(known, reverse=descending)
        assert all(s is None for s in seen[len(known) :]) and len(known) < len(seen)
    vm.set_filter("web")
    vm.set_sort("secret_count", descending=True)
    counts = [r.secret_count for r in vm.state.visible]
    assert counts == sorted(counts, reverse=True)
    assert all("web" in r.name for r in vm.state.visible)
    with pytest.raises(ValidationError) as info:
        vm.set_sort("colour")
    assert info.value.details == {"field": "sort"}


async def test_status_events_update_one_row_without_a_reload() -> None:
    fake, vm = await loaded(20)
    calls = len(fake.calls)
    vm.set_filter("online")
    before = len(vm.state.visible)
    assert vm.apply_event("vault.status", {"vault_id": "vlt_000001", "status": "offline"})
    assert vm.row("vlt_000001").status == "offline"  # type: ignore[union-attr]
    assert len(vm.state.visible) == before - 1  # the filter still applies
    assert not vm.apply_event("vault.status", {"vault_id": "vlt_000001", "status": "offline"})
    assert not vm.apply_event("vault.status", {"vault_id": "vlt_nope", "status": "online"})
    assert not vm.apply_event("vault.status", {"status": "online"})
    vm.set_sort("status")
    assert vm.apply_event("vault.status", {"vault_id": "vlt_000001", "status": "revoked"})
    row = vm.row("vlt_000001")
    assert row is not None and row.revoked
    statuses = [r.status for r in vm.state.visible]
    assert statuses == sorted(statuses)
    assert len(fake.calls) == calls  # no I/O


async def test_inventory_changed_event_updates_the_secret_count() -> None:
    fake, vm = await loaded(5)
    loads = len(fake.called("list_vaults"))
    assert vm.apply_event(
        "inventory.changed", {"vault_id": "vlt_000002", "items": 1, "secrets": 42}
    )
    assert vm.row("vlt_000002").secret_count == 42
    assert not vm.apply_event("inventory.changed", {"vault_id": "vlt_000002", "secrets": 42})
    assert not vm.apply_event("inventory.changed", {"vault_id": "vlt_000002", "items": 1})
    assert len(fake.called("list_vaults")) == loads  # no reload


async def test_registered_event_adds_a_pending_row_in_sort_order() -> None:
    _, vm = await loaded(5)
    assert vm.apply_event("vault.registered", {"vault_id": "vlt_new", "name": "aaa-first"})
    assert vm.state.total == 6 and vm.state.visible[0].id == "vlt_new"
    assert vm.state.visible[0] == VaultRow(
        "vlt_new", "aaa-first", "pending", None, None, None, None, False
    )
    assert not vm.apply_event("vault.registered", {"vault_id": "vlt_new", "name": "again"})
    assert not vm.apply_event("alert.raised", {"vault_id": "vlt_new"})


async def test_refresh_failure_goes_to_state_and_keeps_rows() -> None:
    fake, vm = await loaded(5)
    fake.fail_next(UnavailableError("cannot reach the control plane at http://cp.test: down"))
    await vm.refresh()
    assert vm.state.error == "cannot reach the control plane at http://cp.test: down"
    assert vm.state.total == 5 and not vm.state.loading
    await vm.refresh()
    assert vm.state.error is None and vm.state.total == 5


async def test_revoke_raises_errors_and_shows_the_revoked_row() -> None:
    fake, vm = await loaded(5)
    with pytest.raises(NotFoundError):
        await vm.revoke("vlt_missing")
    row = await vm.revoke("vlt_000002")
    assert row.revoked and row.status == "revoked"
    assert vm.row("vlt_000002") == row
    assert fake.called("revoke_vault")[-1] == (("vlt_000002",), {})


async def test_ten_thousand_rows_filter_sort_and_events() -> None:
    # how fast is measured by `python -m bench.tui` (and bench.desktop), not here
    fake = FakeControlPlane().seed(vaults=10_000)
    vm = VaultsViewModel(fake)  # type: ignore[arg-type]
    await vm.refresh()
    assert vm.state.total == 10_000 and len(vm.state.visible) == 10_000
    vm.set_filter("web-01")
    assert vm.state.visible and all("web-01" in r.name for r in vm.state.visible)
    vm.set_filter("")
    vm.set_sort("name")  # the default column: toggles the direction
    names = [r.name.lower() for r in vm.state.visible]
    assert names == sorted(names, reverse=vm.state.descending)
    vm.set_sort("last_seen")
    assert vm.apply_event("vault.status", {"vault_id": "vlt_000009", "status": "offline"})
    assert vm.row("vlt_000009").status == "offline" and len(vm.state.visible) == 10_000
