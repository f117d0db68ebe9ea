"""Snapshots of the fleet screens over the deterministic fake (fixed clock, fixed data).

Regenerate after an intended change with ``pytest tests/apps/tui/test_snapshots_fleet.py
--snapshot-update`` and look at the SVGs before committing them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from apps.tui.app import KeyVaultApp
from tests.apps.fake_cp import NOW, FakeControlPlane, iso
from tests.apps.tui.conftest import SIZE, settle

Compare = Any


async def loaded(pilot: Any) -> None:
    """Wait for the first load and any worker the keys started."""
    await settle(pilot)
    await settle(pilot)


def test_login_screen(snap_compare: Compare, stable_config: str, clock: Any) -> None:
    app = KeyVaultApp(clock=clock)
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded)


def test_login_screen_with_a_field_error(
    snap_compare: Compare, stable_config: str, clock: Any
) -> None:
    app = KeyVaultApp(clock=clock)

    async def submit(pilot: Any) -> None:
        await loaded(pilot)
        await pilot.press(*"https://cp.example.com", "tab", *"not-an-email", "enter")
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=submit)


def test_vaults_screen(snap_compare: Compare, fake_app: KeyVaultApp) -> None:
    assert snap_compare(fake_app, terminal_size=SIZE, run_before=loaded)


def test_vaults_screen_filtered(snap_compare: Compare, fake_app: KeyVaultApp) -> None:
    async def filtered(pilot: Any) -> None:
        await loaded(pilot)
        await pilot.press("slash", *"online")
        await pilot.pause()

    assert snap_compare(fake_app, terminal_size=SIZE, run_before=filtered)


def test_vault_detail_screen(
    snap_compare: Compare, fake_app: KeyVaultApp, fake_cp: FakeControlPlane
) -> None:
    policy = next(iter(fake_cp.policies))
    fake_cp.add_secret("vlt_000001", "db/password", {"env": "prod"}, policy_id=policy)
    fake_cp.inventories["vlt_000001"][-1]["rotation"]["next_due_at"] = iso(NOW - timedelta(days=2))

    async def detail(pilot: Any) -> None:
        await loaded(pilot)
        await pilot.press("slash", *"web-00000", "enter", "enter")
        await loaded(pilot)

    assert snap_compare(fake_app, terminal_size=SIZE, run_before=detail)


def test_alerts_screen(snap_compare: Compare, fake_app: KeyVaultApp) -> None:
    async def alerts(pilot: Any) -> None:
        await loaded(pilot)
        await pilot.press("a")
        await loaded(pilot)

    assert snap_compare(fake_app, terminal_size=SIZE, run_before=alerts)


def test_help_screen(snap_compare: Compare, fake_app: KeyVaultApp) -> None:
    async def help_(pilot: Any) -> None:
        await loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(fake_app, terminal_size=SIZE, run_before=help_)
