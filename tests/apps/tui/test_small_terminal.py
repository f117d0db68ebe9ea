"""80×24 is fully usable: every area is on the navigation line, the policy form's Save is reachable."""

from __future__ import annotations

from textual.widget import Widget
from textual.widgets import Button, Static

from apps.core.navigation import AREAS
from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from apps.tui.screens.policies import PoliciesScreen
from apps.tui.screens.policy_form import PolicyFormScreen
from tests.apps.conftest import LiveControlPlane
from tests.apps.tui.test_policies_screen import fill, server_policies, wait_for

SMALL = (80, 24)


def on_screen(app: KeyVaultApp, widget: Widget) -> bool:
    """Whether ``widget`` is wholly inside the terminal and is what a click at its centre hits."""
    region = widget.region
    if not region or not app.screen.region.contains_region(region):
        return False
    hit, _ = app.screen.get_widget_at(*region.center)
    return hit is widget or widget in hit.ancestors


async def test_every_area_fits_on_the_navigation_line_at_80_columns(
    live_shell: Shell,
) -> None:
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("v")
        await pilot.pause()
        nav = app.screen.query_one("#header-nav", Static)
        assert on_screen(app, nav)
        lines = [strip.text for strip in nav.render_lines(nav.region.reset_offset)]
        shown = " ".join(lines)
        for area in AREAS:  # "Users", the last, was cut off
            title = area.title.split()[0].replace("Enrollment", "Enroll")
            assert f"{area.letter}\xa0{title}" in shown or f"{area.letter} {title}" in shown, lines
        assert all(len(line.rstrip()) <= SMALL[0] for line in lines)


async def test_the_policy_form_save_is_visible_and_works_at_80x24(
    live_shell: Shell, live_cp: LiveControlPlane
) -> None:
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PoliciesScreen))
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, PolicyFormScreen))
        form = app.screen
        await pilot.pause()
        save = form.query_one("#save", Button)
        cancel = form.query_one("#cancel", Button)
        assert on_screen(app, save) and on_screen(app, cancel)
        assert on_screen(app, form.query_one("#name"))  # the first field too
        fill(form, name="small screen", name_glob="db/*", interval_days="30")
        await pilot.click(save)  # a real click where Save is drawn
        await wait_for(pilot, lambda: not isinstance(app.screen, PolicyFormScreen))
        assert [d["name"] for d in server_policies(live_cp)] == ["small screen"]
