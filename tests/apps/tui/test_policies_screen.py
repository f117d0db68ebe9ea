"""The policies screen against a real control plane: create (bad then good), edit, delete."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from apps.tui.screens.policies import PoliciesScreen
from apps.tui.screens.policy_form import PolicyFormScreen
from tests.apps.conftest import LiveControlPlane
from tests.apps.tui.conftest import SIZE


async def wait_for(pilot: Pilot[None], cond: Callable[[], object], timeout: float = 15) -> None:
    """Let the app run until ``cond()`` holds (workers talk to real servers)."""
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out waiting for the screen")


def server_policies(live_cp: LiveControlPlane) -> list[dict[str, object]]:
    """The policies as the real server has them."""
    return live_cp.policies()


def fill(form: object, **values: str) -> None:
    """Type values into the form's inputs."""
    assert isinstance(form, PolicyFormScreen)
    for field, value in values.items():
        form.query_one(f"#{field}", Input).value = value


def error_of(form: object, field: str) -> str:
    """The error line shown next to a field ('' when hidden)."""
    assert isinstance(form, PolicyFormScreen)
    line = form.query_one(f"#{field}-error", Static)
    return str(line.content) if line.has_class("shown") else ""


async def test_create_edit_delete_policy(live_shell: Shell, live_cp: LiveControlPlane) -> None:
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PoliciesScreen))
        screen = app.screen
        await wait_for(
            pilot, lambda: "0 policies" in str(screen.query_one("#policies-status", Static).content)
        )

        # a bad interval: the message sits next to the field and nothing reaches the server
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, PolicyFormScreen))
        form = app.screen
        assert isinstance(form, PolicyFormScreen)
        fill(form, name="db passwords", name_glob="db/*", interval_days="soon")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: error_of(form, "interval_days"))
        assert "number of days" in error_of(form, "interval_days")
        assert error_of(form, "name") == ""
        assert app.screen is form
        assert server_policies(live_cp) == []

        # fixed: saved on the server, the form closes, the table shows it
        fill(form, interval_days="30", settings="length=40")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is screen)
        docs = server_policies(live_cp)
        assert [(d["name"], d["interval_seconds"]) for d in docs] == [("db passwords", 30 * 86400)]
        assert docs[0]["rotator"] == {"type": "random", "settings": {"length": 40}}
        table = screen.query_one("#policies", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1)

        # edit through Enter on the row
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PolicyFormScreen))
        edit = app.screen
        assert isinstance(edit, PolicyFormScreen)
        assert edit.query_one("#name", Input).value == "db passwords"
        assert edit.query_one("#interval_days", Input).value == "30"
        fill(edit, interval_days="7")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is screen)
        assert server_policies(live_cp)[0]["interval_seconds"] == 7 * 86400
        await wait_for(pilot, lambda: "7 d" in str(table.get_row_at(0)))

        # delete, confirmed
        await pilot.press("d")
        await pilot.press("y")
        await wait_for(pilot, lambda: table.row_count == 0)
        assert server_policies(live_cp) == []


async def test_policy_events_arrive_live(live_shell: Shell, live_cp: LiveControlPlane) -> None:
    """A policy made elsewhere appears without a reload (the live stream)."""
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PoliciesScreen))
        await wait_for(pilot, lambda: live_shell.online)
        headers = {"Authorization": f"Bearer {live_cp.token()}"}
        doc = {
            "name": "from the cli",
            "selector": {"name_glob": "api/*"},
            "interval_seconds": 86400,
            "rotator": {"type": "random", "settings": {}},
        }
        resp = httpx.post(live_cp.url + "/api/v1/policies", json=doc, headers=headers)
        assert resp.status_code == 201, resp.text
        table = app.screen.query_one("#policies", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        assert "from the cli" in str(table.get_row_at(0))


async def test_every_error_at_once_next_to_its_field(
    live_shell: Shell, live_cp: LiveControlPlane
) -> None:
    """Issue 19: several problems are shown together, each next to its field, at 80×24 too."""
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PoliciesScreen))
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, PolicyFormScreen))
        form = app.screen
        fill(form, name="", name_glob="db/*", interval_days="1", notice_days="2",
             settings="colour=red")  # fmt: skip
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: error_of(form, "notice_days"))
        assert "1 to 200" in error_of(form, "name")
        assert "shorter than the interval" in error_of(form, "notice_days")
        assert "no setting 'colour'" in error_of(form, "settings")
        fill(form, name="ok", notice_days="0", settings="", scope="vlt_nope")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: "no vault vlt_nope" in error_of(form, "scope"))
        assert error_of(form, "name") == "" and server_policies(live_cp) == []
        vault_id = await asyncio.to_thread(live_cp.enroll_vault, "db-1")
        fill(form, scope="db-1")  # a vault by its name
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: len(server_policies(live_cp)) == 1)
        assert server_policies(live_cp)[0]["scope"] == {"vault_ids": [vault_id]}


async def test_a_policy_scope_shows_vault_names_not_ids(
    live_shell: Shell, live_cp: LiveControlPlane
) -> None:
    """Issue 19: the Vaults column names the vaults a policy is limited to."""
    import asyncio

    vault_id = await asyncio.to_thread(live_cp.enroll_vault, "db-1")
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PoliciesScreen))
        await wait_for(pilot, lambda: live_shell.online)
        doc = {
            "name": "db only",
            "selector": {"name_glob": "db/*"},
            "interval_seconds": 86400,
            "rotator": {"type": "random", "settings": {}},
            "scope": {"vault_ids": [vault_id]},
        }
        headers = {"Authorization": f"Bearer {live_cp.token()}"}
        resp = httpx.post(live_cp.url + "/api/v1/policies", json=doc, headers=headers)
        assert resp.status_code == 201, resp.text
        table = app.screen.query_one("#policies", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        await wait_for(pilot, lambda: "db-1" in [str(c) for c in table.get_row_at(0)])
        assert vault_id not in str(table.get_row_at(0))
