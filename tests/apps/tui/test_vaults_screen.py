"""The fleet screen over the fake control plane: filter, sort, open, live rows, revoke."""

from __future__ import annotations

from datetime import date
from typing import Any

from rich.text import Text
from textual.widgets import Input

from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from apps.tui.screens.vault_detail import VaultDetailScreen
from apps.tui.screens.vaults import FleetTable, VaultsScreen
from tests.apps.fake_cp import FakeControlPlane
from tests.apps.fake_shell import FakeStream
from tests.apps.tui.conftest import SIZE, settle, texts


def table_of(app: KeyVaultApp) -> FleetTable:
    """The fleet table on the current screen."""
    return app.screen.query_one(FleetTable)


def names(app: KeyVaultApp) -> list[str]:
    """The name column, top to bottom."""
    table = table_of(app)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def test_rows_show_every_vault_with_coloured_status(fake_app: KeyVaultApp) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = table_of(fake_app)
        assert table.row_count == 12
        assert names(fake_app) == sorted(names(fake_app), key=str.lower)
        row = table.get_row("vlt_000001")  # web-00000, online, 6 secrets
        assert str(row[0]) == "web-00000"
        assert isinstance(row[0], Text)  # a name is shown as is, never parsed as markup
        assert row[1].plain == "online" and "green" in str(row[1].style)
        assert row[2].plain == "live"  # online: a heartbeat came within the offline limit
        assert str(row[3]) == "6"
        assert row[5].plain == f"in {(date(2026, 2, 4) - fake_app.now().date()).days}d"
        offline = table.get_row("vlt_000004")
        assert offline[1].plain == "offline" and "red" in str(offline[1].style)
        assert str(offline[2]) == "3m ago"
        assert "12 of 12 vaults" in texts(fake_app, "#summary")


async def test_filter_as_you_type(fake_app: KeyVaultApp) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        assert isinstance(fake_app.focused, Input)
        await pilot.press(*"web")
        await pilot.pause()
        assert names(fake_app) == ["web-00000", "web-00005", "web-00010"]
        assert "3 of 12 vaults matching “web”" in texts(fake_app, "#summary")
        await pilot.press(*"-0000")
        assert names(fake_app) == ["web-00000", "web-00005"]
        for _ in range(8):
            await pilot.press("backspace")
        assert table_of(fake_app).row_count == 12


async def test_sort_by_key_and_header(fake_app: KeyVaultApp) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("o")  # next column: status
        statuses = [table_of(fake_app).get_row_at(i)[1].plain for i in range(12)]
        assert statuses == sorted(statuses)
        assert str(table_of(fake_app).columns["status"].label) == "Status ▲"  # type: ignore[index]
        await pilot.click("#vaults", offset=(3, 0))  # the "Name" header
        await pilot.pause()
        assert names(fake_app) == sorted(names(fake_app), key=str.lower)
        await pilot.press("O")
        assert names(fake_app) == sorted(names(fake_app), key=str.lower, reverse=True)


async def test_enter_opens_the_vault(fake_app: KeyVaultApp) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        first = table_of(fake_app).coordinate_to_cell_key(table_of(fake_app).cursor_coordinate)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(fake_app.screen, VaultDetailScreen)
        assert fake_app.screen.vault_id == first.row_key.value
        await pilot.press("escape")
        assert isinstance(fake_app.screen, VaultsScreen)


async def test_status_event_repaints_only_that_row(
    fake_app: KeyVaultApp, fake_shell: Shell, monkeypatch: Any
) -> None:
    stream = fake_shell.stream
    assert isinstance(stream, FakeStream)
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = table_of(fake_app)
        rebuilds: list[int] = []
        monkeypatch.setattr(table, "clear", lambda *a, **k: rebuilds.append(1))
        stream.emit("vault.status", {"vault_id": "vlt_000001", "status": "offline"})
        await pilot.pause()
        assert table.get_row("vlt_000001")[1].plain == "offline"
        assert rebuilds == []
        assert table.row_count == 12


async def test_new_vault_appears_live(fake_app: KeyVaultApp, fake_shell: Shell) -> None:
    stream = fake_shell.stream
    assert isinstance(stream, FakeStream)
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        stream.emit("vault.registered", {"vault_id": "vlt_new", "name": "aaa-first"})
        await pilot.pause()
        assert names(fake_app)[0] == "aaa-first"
        assert table_of(fake_app).get_row("vlt_new")[1].plain == "pending"


async def test_revoke_asks_first(fake_app: KeyVaultApp, fake_cp: FakeControlPlane) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        target = table_of(fake_app).coordinate_to_cell_key((0, 0)).row_key.value  # type: ignore[arg-type]
        name = fake_cp.vaults[str(target)]["name"]
        await pilot.press("x", "escape")
        await settle(pilot)
        assert fake_cp.called("revoke_vault") == []
        # irreversible: "y" is not an answer, only the vault's name typed in full is
        await pilot.press("x", "y", "enter")
        await settle(pilot)
        assert fake_cp.called("revoke_vault") == []
        await pilot.press("escape", "x", *name, "enter")
        await settle(pilot)
        assert fake_cp.called("revoke_vault") == [((target,), {})]
        assert table_of(fake_app).get_row(str(target))[1].plain == "revoked"


async def test_ten_thousand_rows_fill_in_chunks(stable_config: str, clock: Any) -> None:
    from tests.apps.fake_shell import build_fake_shell

    fake = FakeControlPlane().seed(vaults=10_000)
    shell = build_fake_shell(fake)
    app = KeyVaultApp(shell, clock=clock, start="vaults")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        while table_of(app).row_count < 10_000:
            await pilot.pause(0.05)
        stream = shell.stream
        assert isinstance(stream, FakeStream)
        first = shell.vaults.state.visible[0]
        stream.emit("vault.status", {"vault_id": first.id, "status": "pending"})
        await pilot.pause()
        assert table_of(app).get_row(first.id)[1].plain == "pending"
        await pilot.press("slash", *"web-00")  # web-00000, web-00005 … web-00995
        await settle(pilot)
        assert len(shell.vaults.state.visible) == 200
        assert table_of(app).row_count == 200
    await shell.close()


def test_add_keyed_rows_matches_add_row() -> None:
    from textual.app import App, ComposeResult

    class Two(App[None]):
        def compose(self) -> ComposeResult:
            for _ in range(2):
                table = FleetTable()
                table.add_column("A", key="a", width=5)
                table.add_column("B", key="b", width=5)
                yield table

    async def run() -> None:
        app = Two()
        async with app.run_test() as pilot:
            one, two = app.query(FleetTable).results()
            for i in range(30):
                one.add_row(f"a{i}", str(i), key=f"k{i}")
            two.add_keyed_rows((f"k{i}", (f"a{i}", str(i))) for i in range(30))
            await pilot.pause()
            assert one.row_count == two.row_count == 30
            assert [r.key for r in one.ordered_rows] == [r.key for r in two.ordered_rows]
            assert one.get_row("k7") == two.get_row("k7") == ["a7", "7"]
            assert one.virtual_size == two.virtual_size
            assert one.get_row_index("k29") == two.get_row_index("k29") == 29

    import asyncio

    asyncio.run(run())


async def test_columns_fit_an_80_column_terminal_and_widen_again(fake_app: KeyVaultApp) -> None:
    """At 80×24 every column stays on screen, cut with "…" (no sideways scrolling hides the
    status or the certificate); a wider terminal gives the columns their full widths back."""
    from apps.tui.screens.vaults import COLUMNS, KEEP

    async with fake_app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = table_of(fake_app)
        widths = [column.width for column in table.ordered_columns]
        assert table.virtual_size.width <= table.scrollable_content_region.width, widths
        assert table.max_scroll_x == 0
        for (_, key, natural), width in zip(COLUMNS, widths, strict=True):
            assert min(natural, KEEP.get(key, 4)) <= width < natural or width == natural
        row = table.get_row("vlt_000004")
        assert row[1].plain == "offline"  # whole: its column keeps 7 cells
        lines = "\n".join(strip.text for strip in table.render_lines(table.region.reset_offset))
        assert "offline" in lines and "…" in lines
        await pilot.resize_terminal(160, 40)
        await pilot.pause()
        assert [c.width for c in table.ordered_columns] == [w for _, _, w in COLUMNS]
