"""UsageViewModel against a real control plane fed with agents' event metadata."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from apps.core.viewmodels.usage import UsageViewModel, day_span, series
from common import errors as e
from common.cpclient import AsyncControlPlaneClient
from tests.apps.conftest import LiveControlPlane
from tests.apps.fake_cp import FakeControlPlane

TODAY = datetime.now(UTC).date()


def _events(prefix: str, op: str, days_ago: int, count: int) -> list[dict[str, str]]:
    at = datetime.combine(TODAY - timedelta(days=days_ago), datetime.min.time(), UTC)
    moment = (at + timedelta(hours=12)).isoformat()
    return [
        {"event_id": f"{prefix}-{op}-{days_ago}-{n}", "op": op, "outcome": "ok", "at": moment}
        for n in range(count)
    ]


def _feed(live: LiveControlPlane) -> tuple[str, str]:
    web, db = live.enroll_vault("web-1"), live.enroll_vault("db-1")
    live.server.run(
        live.cp.audit.ingest(web, _events("w", "read", 0, 3) + _events("w", "write", 2, 1))
    )
    live.server.run(
        live.cp.audit.ingest(db, _events("d", "read", 2, 2) + _events("d", "read", 40, 5))
    )
    return web, db


def test_series_are_zero_filled_per_key() -> None:
    days = day_span("2026-01-30", "2026-02-02")
    assert days == ("2026-01-30", "2026-01-31", "2026-02-01", "2026-02-02")
    rows = [
        {"day": "2026-01-31", "vault_id": "vlt_a", "operation": "read", "count": 2},
        {"day": "2026-01-31", "vault_id": "vlt_b", "operation": "read", "count": 1},
        {"day": "2026-02-02", "vault_id": "vlt_a", "operation": "write", "count": 4},
        {"day": "2025-12-01", "vault_id": "vlt_a", "operation": "read", "count": 9},  # outside
    ]
    assert series(days, rows, "operation") == {"read": (0, 3, 0, 0), "write": (0, 0, 0, 4)}
    assert series(days, rows, "vault_id") == {"vlt_a": (0, 2, 0, 4), "vlt_b": (0, 1, 0, 0)}


async def test_ranges_and_vaults_against_the_real_control_plane(live_cp: LiveControlPlane) -> None:
    web, db = _feed(live_cp)
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        vm = UsageViewModel(cp)
        await vm.refresh()
        state = vm.state
        assert state.error is None and len(state.days) == 30
        assert state.end == TODAY.isoformat() and state.days[-1] == TODAY.isoformat()
        assert state.start == (TODAY - timedelta(days=29)).isoformat()
        assert state.by_operation["read"][-1] == 3 and state.by_operation["read"][-3] == 2
        assert state.by_operation["write"][-3] == 1 and sum(state.by_operation["write"]) == 1
        assert state.by_vault[web][-1] == 3 and state.by_vault[web][-3] == 1
        assert state.by_vault[db][-3] == 2
        assert all(len(s) == 30 for s in [*state.by_operation.values(), *state.by_vault.values()])
        assert state.total == 6  # the 40-day-old reads are outside the range

        await vm.set_range(90)
        assert len(vm.state.days) == 90 and vm.state.total == 11
        assert vm.state.by_vault[db][-41] == 5

        await vm.set_vault(web)
        assert vm.state.vault_id == web and set(vm.state.by_vault) == {web}
        assert vm.state.total == 4

        await vm.set_range(7)
        await vm.set_vault(None)
        assert len(vm.state.days) == 7 and vm.state.total == 6 and vm.state.vault_id is None


async def test_a_day_without_usage_is_all_zero(live_cp: LiveControlPlane) -> None:
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        vm = UsageViewModel(cp, today=lambda: date(2026, 3, 10))
        await vm.set_range(7)
        assert vm.state.days[0] == "2026-03-04" and vm.state.days[-1] == "2026-03-10"
        assert vm.state.by_operation == {} and vm.state.total == 0


async def test_a_bad_range_is_a_field_error() -> None:
    vm = UsageViewModel(FakeControlPlane())
    for days in (0, 400, True):
        with pytest.raises(e.ValidationError) as info:
            await vm.set_range(days)
        assert info.value.details == {"field": "days"}


async def test_a_failed_load_keeps_the_chart() -> None:
    fake = FakeControlPlane()
    vm = UsageViewModel(fake)
    await vm.refresh()
    before = vm.state.days
    assert before and vm.state.error is None
    fake.fail_next(e.UnavailableError("cannot reach the control plane at http://cp.test: down"))
    await vm.refresh()
    assert vm.state.error is not None and "cannot reach" in vm.state.error
    assert vm.state.days == before and not vm.state.loading
