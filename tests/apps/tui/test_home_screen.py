"""The TUI's home screen: what needs the operator now, live, and one key from where it is fixed."""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable

from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from apps.tui.screens.alerts import AlertsScreen
from apps.tui.screens.home import HomeScreen
from apps.tui.screens.vault_detail import VaultDetailScreen
from tests.apps.fake_cp import FakeControlPlane
from tests.apps.fake_shell import FakeStream
from tests.apps.tui.conftest import SIZE, settle, texts

Compare = Any


def _rows(app: KeyVaultApp) -> list[list[str]]:
    table = app.screen.query_one("#needs", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_opens_on_home_and_the_list_agrees_with_its_counts(
    fake_shell: Shell, fake_cp: FakeControlPlane, clock: Any
) -> None:
    app = KeyVaultApp(fake_shell, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, HomeScreen)
        state = fake_shell.home.state
        assert len(_rows(app)) == state.total == sum(state.counts.values()) > 0
        assert state.summary() in texts(app, "#summary")
        severities = [r[0] for r in _rows(app)]
        rank = {"critical": 0, "warning": 1, "info": 2}
        assert severities == sorted(severities, key=rank.__getitem__)

        stream = fake_shell.stream
        assert isinstance(stream, FakeStream)
        flagged = {i.vault_id for i in state.items}
        online = next(
            r for r in fake_shell.vaults.state.rows if r.status == "online" and r.id not in flagged
        )
        stream.emit("vault.status", {"vault_id": online.id, "status": "offline"})
        await settle(pilot)
        assert any(r[3] == f"{online.name} is offline" for r in _rows(app)), _rows(app)
        assert len(_rows(app)) == fake_shell.home.state.total == state.total + 1


async def test_enter_goes_where_it_is_fixed(
    fake_shell: Shell, fake_cp: FakeControlPlane, clock: Any
) -> None:
    app = KeyVaultApp(fake_shell, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        items = fake_shell.home.state.items
        at_vault = next(i for i, item in enumerate(items) if item.goto == "vault")
        table = app.screen.query_one("#needs", DataTable)
        table.move_cursor(row=at_vault)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, VaultDetailScreen)
        assert app.screen.vault_id == items[at_vault].vault_id
        await pilot.press("escape", "h")
        await settle(pilot)
        at_alert = next(i for i, item in enumerate(items) if item.goto == "alerts")
        app.screen.query_one("#needs", DataTable).move_cursor(row=at_alert)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, AlertsScreen)


def test_home_snapshot(snap_compare: Compare, fake_shell: Shell, clock: Any) -> None:
    app = KeyVaultApp(fake_shell, clock=clock)

    async def loaded(pilot: Any) -> None:
        await settle(pilot)
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=loaded)


def test_home_snapshot_80x24(snap_compare: Compare, fake_shell: Shell, clock: Any) -> None:
    app = KeyVaultApp(fake_shell, clock=clock)

    async def loaded(pilot: Any) -> None:
        await settle(pilot)
        await settle(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=loaded)
