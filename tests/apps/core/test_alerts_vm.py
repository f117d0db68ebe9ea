"""AlertsViewModel: loading, acknowledge/resolve, the unread count, stream events."""

from __future__ import annotations

from typing import Any

import pytest

from apps.core.viewmodels.alerts import AlertRow, AlertsViewModel
from common.errors import ConflictError, NotFoundError, PermissionDeniedError
from tests.apps.fake_cp import FakeControlPlane


async def loaded(alerts: int = 5) -> tuple[FakeControlPlane, AlertsViewModel]:
    fake = FakeControlPlane().seed(vaults=3, alerts=alerts)
    vm = AlertsViewModel(fake)  # type: ignore[arg-type]
    await vm.refresh()
    return fake, vm


async def test_refresh_loads_every_alert_newest_first() -> None:
    fake, vm = await loaded(5)
    # open alerts nobody has looked at yet are unread, also right after a (new) login
    assert len(vm.state.rows) == 5 and vm.state.error is None and vm.state.unread == 5
    times = [r.raised_at for r in vm.state.rows]
    assert times == sorted(times, reverse=True)  # type: ignore[type-var]
    first = vm.state.rows[0]
    doc = fake.alerts[first.id]
    assert (first.kind, first.severity, first.state, first.message, first.vault_id) == (
        doc["kind"],
        doc["severity"],
        "open",
        doc["message"],
        doc["vault_id"],
    )
    assert first.raised_at is not None and first.raised_at.tzinfo is not None


async def test_acknowledge_and_resolve_and_hidden_resolved() -> None:
    fake, vm = await loaded(3)
    alert_id = vm.state.rows[0].id
    row = await vm.acknowledge(alert_id)
    assert row.state == "acknowledged" and vm.row(alert_id) == row
    with pytest.raises(ConflictError):
        await vm.acknowledge(alert_id)  # already acknowledged: the server says why
    await vm.resolve(alert_id)
    assert alert_id not in {r.id for r in vm.state.rows}  # resolved ones are hidden
    vm.set_show_resolved(True)
    assert vm.state.show_resolved and alert_id in {r.id for r in vm.state.rows}
    with pytest.raises(NotFoundError):
        await vm.resolve("alr_missing")
    fake.fail_next(PermissionDeniedError("your role (viewer) cannot do this"))
    with pytest.raises(PermissionDeniedError):
        await vm.resolve(vm.state.rows[-1].id)


async def test_raised_events_bump_unread_until_marked_read() -> None:
    fake, vm = await loaded(2)
    vm.mark_read()
    assert vm.state.unread == 0
    new = fake.add_alert("rotation_failed", "rotation of sec_1 failed", "critical", "vlt_000001")
    assert vm.apply_event("alert.raised", new)
    assert vm.state.unread == 1 and vm.state.rows[0].id == new["id"]
    assert not vm.apply_event("alert.raised", new)  # the same alert again changes nothing
    assert vm.state.unread == 1
    moved = await fake.acknowledge_alert(new["id"])
    assert vm.apply_event("alert.acknowledged", moved)
    # acknowledged means someone has dealt with it: no longer unread, still listed
    assert vm.state.unread == 0 and vm.row(new["id"]).state == "acknowledged"  # type: ignore[union-attr]
    resolved = await fake.resolve_alert(new["id"])
    assert vm.apply_event("alert.resolved", resolved)
    assert new["id"] not in {r.id for r in vm.state.rows}
    vm.mark_read()
    assert vm.state.unread == 0
    assert not vm.apply_event("vault.status", {"id": "x"})
    assert not vm.apply_event("alert.raised", {"no": "id"})


async def test_refresh_error_keeps_rows() -> None:
    fake, vm = await loaded(2)
    fake.fail_next(PermissionDeniedError("your role cannot list alerts"), "list_alerts")
    await vm.refresh()
    assert vm.state.error == "your role cannot list alerts" and len(vm.state.rows) == 2


async def test_refresh_follows_pages() -> None:
    fake, vm = await loaded(0)
    for i in range(620):
        fake.add_alert("vault_offline", f"offline {i}")
    await vm.refresh()
    assert len(vm.state.rows) == 620 and len(fake.called("list_alerts")) == 3
    assert isinstance(vm.state.rows[0], AlertRow)


async def test_unread_always_agrees_with_the_open_alerts_after_reloads() -> None:
    """A stall or a new login reloads: the count is derived from the alerts, not kept aside."""
    fake, vm = await loaded(3)
    vm.mark_read()
    missed = fake.add_alert("vault_offline", "vault db-1 is offline", "critical", "vlt_000001")
    await vm.refresh()  # e.g. after a reconnect: the alert raised meanwhile is unread
    assert vm.state.unread == 1
    await fake.resolve_alert(missed["id"])
    await vm.refresh()  # resolved while we were away: not counted, not listed
    assert vm.state.unread == 0 and missed["id"] not in {r.id for r in vm.state.rows}
    assert len(vm.open_rows) == 3
    again = AlertsViewModel(fake)  # type: ignore[arg-type]
    await again.refresh()  # logging in again: every open alert is unread until looked at
    assert again.state.unread == len(again.open_rows) == 3


async def test_an_event_during_a_reload_is_not_lost() -> None:
    """A reload (after a reconnect, or a vault coming online) that started before an alert was
    raised must not drop that alert when its older page arrives."""
    import asyncio

    fake, vm = await loaded(1)
    started, release = asyncio.Event(), asyncio.Event()
    original = fake.list_alerts

    async def slow(*args: Any, **kw: Any) -> Any:
        page = await original(*args, **kw)  # the page as it was when the reload began
        started.set()
        await release.wait()
        return page

    fake.list_alerts = slow  # type: ignore[method-assign]
    reload = asyncio.create_task(vm.refresh())
    await started.wait()
    new = fake.add_alert("vault_offline", "web-1 gone", "critical", "vlt_000001")
    assert vm.apply_event("alert.raised", new)
    release.set()
    await reload
    assert new["id"] in {r.id for r in vm.state.rows} and vm.state.unread == 2


async def test_the_open_count_agrees_with_the_open_list_whatever_was_read() -> None:
    """Reading the alerts clears the unread count, never the open count Home and the header show."""
    fake, vm = await loaded(3)
    assert vm.state.open == len(vm.open_rows) == 3 and vm.state.unread == 3
    vm.mark_read()
    assert vm.state.open == len(vm.open_rows) == 3 and vm.state.unread == 0
    first = vm.state.rows[0].id
    await vm.acknowledge(first)  # acknowledged is still open (Home lists it)
    assert vm.state.open == len(vm.open_rows) == 3
    await vm.resolve(first)
    assert vm.state.open == len(vm.open_rows) == 2
    new = fake.add_alert("vault_offline", "vault db-1 is offline", "critical", "vlt_000001")
    vm.apply_event("alert.raised", new)
    assert (vm.state.open, vm.state.unread) == (3, 1) == (len(vm.open_rows), 1)
    await vm.refresh()  # a reload (reconnect, new login) derives both again
    assert (vm.state.open, vm.state.unread) == (3, 1)
