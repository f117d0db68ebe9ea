"""Every TUI table fits the terminal: columns give way (widest first) and a cut cell ends in
"…", at 80×24 and at 140 columns; the header never cuts its counts for a long screen title."""

from __future__ import annotations

import pytest
from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Static

from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel
from apps.tui.app import KeyVaultApp
from apps.tui.screens.secrets import SecretsScreen
from apps.tui.widgets.tables import CutTable, cut, fit_widths
from tests.apps.fake_cp import FakeControlPlane
from tests.apps.tui.conftest import settle
from tests.apps.tui.test_snapshots_ops import AGENT, FakeAgentClient

LONG = "a policy whose name is far longer than any column of an 80-column terminal allows"


def test_fit_widths_keeps_what_fits_and_cuts_the_widest_first() -> None:
    assert fit_widths([5, 10, 20], [4, 4, 4], 40) == [5, 10, 20]
    assert fit_widths([5, 10, 40], [4, 4, 4], 30) == [5, 10, 15]  # only the widest gives way
    assert fit_widths([5, 30, 40], [4, 4, 4], 30) == [5, 12, 12]
    assert fit_widths([8, 30], [8, 6], 10) == [8, 6]  # never below a column's minimum


def test_cut_makes_plain_text_ellipsise_and_never_reads_markup() -> None:
    cell = cut("[bold]not markup[/bold]")
    assert isinstance(cell, Text) and cell.plain == "[bold]not markup[/bold]"
    assert cell.no_wrap and cell.overflow == "ellipsis"


def rendered(table: CutTable) -> list[str]:
    """The table's visible lines as text."""
    return [table.render_line(y).text for y in range(min(table.size.height, table.row_count + 1))]


def check_fits(table: CutTable) -> None:
    """Columns fit the table's width; every cell wider than its column shows "…"."""
    used = sum(table.widths) + 2 * table.cell_padding * len(table.widths)
    assert used <= table.size.width, (table.id, table.widths, table.size)
    lines = rendered(table)
    for index, (_, cells) in enumerate(table.shown[: len(lines) - 1]):
        line = lines[index + 1]
        assert len(line.rstrip()) <= table.size.width
        cut_cells = [c for c, w in zip(cells, table.widths, strict=True) if cell_len(str(c)) > w]
        if cut_cells:
            assert "…" in line, (table.id, line)


@pytest.mark.parametrize("size", [(80, 24), (140, 40)])
async def test_every_list_screen_fits_and_cuts_with_an_ellipsis(
    fake_app: KeyVaultApp, fake_cp: FakeControlPlane, size: tuple[int, int]
) -> None:
    fake_cp.policies[next(iter(fake_cp.policies))]["name"] = LONG
    for action in ("secrets.list", "policies.update", "vaults.register"):
        fake_cp.add_audit(action)
    async with fake_app.run_test(size=size) as pilot:
        seen_cut = 0
        for key in ("h", "v", "a", "p", "l", "e", "g"):
            await pilot.press(key)
            await settle(pilot)
            await pilot.pause(0.1)
            for table in fake_app.screen.query(CutTable):
                if not table.size.width:
                    continue
                check_fits(table)
                seen_cut += any("…" in line for line in rendered(table))
        assert seen_cut, "the long policy name was never cut"


async def test_the_header_keeps_its_counts_for_a_long_title_at_140_columns(
    fake_app: KeyVaultApp, fake_cp: FakeControlPlane
) -> None:
    async with fake_app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        model = AgentSecretsViewModel(AGENT, "kvt_fake", client=FakeAgentClient())
        await fake_app.push_screen(SecretsScreen(AGENT, model))
        await settle(pilot)
        status = fake_app.screen.query_one("#header-status", Static)
        plain = str(getattr(status.render(), "plain", status.render()))
        open_alerts = sum(1 for a in fake_cp.alerts.values() if a["state"] == "open")
        assert f"{open_alerts} open alerts · {open_alerts} unread" in plain, plain
        assert cell_len(plain) <= status.content_region.width, (plain, status.region)


async def test_the_help_wraps_inside_an_80_column_terminal(fake_app: KeyVaultApp) -> None:
    from apps.tui.screens.help import HelpScreen

    async with fake_app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(fake_app.screen, HelpScreen)
        body = fake_app.screen.query_one("#help-body")
        assert body.region.right <= 80 and body.region.x >= 0, body.region
        for part in ("#help-credentials", "#help-keys"):
            widget = fake_app.screen.query_one(part, Static)
            assert widget.region.right <= body.region.right, (part, widget.region)
            assert widget.virtual_size.width <= widget.content_region.width + 1, part


async def test_the_agents_screen_leaves_its_list_readable_at_80_columns(
    fake_app: KeyVaultApp,
) -> None:
    """The connect form used to take 76 of 80 columns, wrapping the list's help a few
    letters a line."""
    async with fake_app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s")
        await settle(pilot)
        pane = fake_app.screen.query_one("#agents-pane")
        form = fake_app.screen.query_one("#connect")
        assert pane.region.width >= 28 and form.region.right <= 80, (pane.region, form.region)
        assert form.region.width >= 40


async def test_one_line_status_lines_end_in_an_ellipsis_when_cut(fake_app: KeyVaultApp) -> None:
    """Status and fact lines are one line, cut with "…" (not wrapped into a one-line box)."""
    async with fake_app.run_test(size=(80, 24)) as pilot:
        await pilot.press("u")
        await settle(pilot)
        totals = fake_app.screen.query_one("#usage-totals", Static)
        totals.update("x " * 100)
        await pilot.pause()
        line = totals.render_line(0).text
        assert line.rstrip().endswith("…") and len(line) <= 80, line


async def test_the_header_title_is_readable_on_the_light_theme(fake_app: KeyVaultApp) -> None:
    """The accent title was pale orange on the light theme's grey panel."""
    async with fake_app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        title = fake_app.screen.query_one("#header-title", Static)
        dark = title.styles.color
        fake_app.theme = "textual-light"
        await pilot.pause()
        await pilot.pause()
        light = title.styles.color
        assert light.brightness < dark.brightness - 0.15, (light, dark)


async def test_the_navigation_keys_are_readable_on_the_light_theme(fake_app: KeyVaultApp) -> None:
    """The key letters (and "credentials in memory only") were pale yellow on the light
    theme's grey header; they now take the theme's darker warning text, and switch back."""
    from textual.color import Color

    def key_colours() -> set[str]:
        nav = fake_app.screen.query_one("#header-nav", Static)
        text = nav.render_line(0)
        return {
            seg.style.color.name if seg.style.color.triplet is None else seg.style.color.triplet.hex
            for seg in text
            if seg.text.strip() in {"a", "p"} and seg.style and seg.style.color
        }

    async with fake_app.run_test(size=(140, 40)) as pilot:
        await settle(pilot)
        dark = key_colours()
        fake_app.theme = "textual-light"
        await pilot.pause()
        await pilot.pause()
        light = key_colours()
        assert len(light) == 1 and light != dark, (light, dark)
        background = Color.parse(fake_app.get_css_variables()["panel"])
        key = Color.parse(next(iter(light)))
        lum = [c.brightness for c in (key, background)]
        assert max(lum) - min(lum) > 0.3, (key, background)
        fake_app.theme = "textual-dark"
        await pilot.pause()
        await pilot.pause()
        assert key_colours() == dark
