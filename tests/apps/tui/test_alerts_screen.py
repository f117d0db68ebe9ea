"""The alerts screen: colours, acknowledge/resolve, resolved toggle, unread count, live.

The last test runs against the real control plane: an alert raised by its services shows up
live with the unread count, and the keys change the server's state.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

from textual.widgets import DataTable

from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from apps.tui.screens.alerts import AlertsScreen
from tests.apps.conftest import LiveControlPlane
from tests.apps.fake_cp import FakeControlPlane
from tests.apps.fake_shell import FakeStream
from tests.apps.tui.conftest import SIZE, header_text, settle, texts


def rows(app: KeyVaultApp) -> list[list[Any]]:
    """Every row of the alerts table."""
    table = app.screen.query_one(DataTable)
    return [table.get_row_at(i) for i in range(table.row_count)]


async def wait_for(pilot: Any, check: Any, timeout: float = 10.0) -> None:
    """Pause until ``check()`` is true (live events arrive from another thread)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await pilot.pause(0.05)


async def test_alerts_coloured_by_severity(fake_app: KeyVaultApp) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await pilot.pause()
        shown = {r[0].plain: r for r in rows(fake_app)}
        assert set(shown) == {"critical", "warning", "info"}
        assert "red" in str(shown["critical"][0].style)
        assert "yellow" in str(shown["warning"][0].style)
        assert "blue" in str(shown["info"][0].style)
        assert {r[1].plain for r in shown.values()} == {"open"}
        assert str(shown["critical"][2]) == "web-00000"  # the vault's name, not its id
        # ids in a message read as names too
        assert shown["critical"][3].plain == "vault offline on web-00000"
        assert str(shown["critical"][4]) == "1h ago"
        assert str(shown["info"][4]) == "58m ago"


async def test_acknowledge_resolve_and_show_resolved(
    fake_app: KeyVaultApp, fake_cp: FakeControlPlane
) -> None:
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("a")
        await pilot.pause()
        first = rows(fake_app)[0]  # the newest: the cursor is on it
        shown = fake_app.shell.alerts.state.rows[0]  # type: ignore[union-attr]
        assert first[1].plain == shown.state
        alert_id = shown.id
        await pilot.press("k")
        await settle(pilot)
        assert fake_cp.alerts[alert_id]["state"] == "acknowledged"
        assert rows(fake_app)[0][1].plain == "acknowledged"
        await pilot.press("k")  # not open any more
        await settle(pilot)
        assert len(fake_cp.called("acknowledge_alert")) == 1
        await pilot.press("f")
        await settle(pilot)
        assert fake_cp.alerts[alert_id]["state"] == "resolved"
        assert len(rows(fake_app)) == 2
        await pilot.press("t")
        await pilot.pause()
        assert len(rows(fake_app)) == 3
        assert "showing resolved too" in texts(fake_app, "#summary")
        assert any(r[1].plain == "resolved" for r in rows(fake_app))


async def test_unread_count_goes_to_zero_on_the_alerts_screen(
    fake_app: KeyVaultApp, fake_shell: Shell, fake_cp: FakeControlPlane
) -> None:
    stream = fake_shell.stream
    assert isinstance(stream, FakeStream)
    async with fake_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        seeded = sum(1 for a in fake_cp.alerts.values() if a["state"] == "open")
        # open alerts nobody has looked at are unread from the start (a new login included)
        assert f"{seeded} open alerts · {seeded} unread" in header_text(fake_app)
        stream.emit("alert.raised", fake_cp.add_alert("integrity_failure", "bad chain", "critical"))
        stream.emit("alert.raised", fake_cp.add_alert("audit_failure", "gap", "warning"))
        await pilot.pause()
        assert f"{seeded + 2} open alerts · {seeded + 2} unread" in header_text(fake_app)
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(fake_app.screen, AlertsScreen)
        assert f"{seeded + 2} open alerts · 0 unread" in header_text(fake_app)
        stream.emit("alert.raised", fake_cp.add_alert("vault_offline", "gone", "critical"))
        await pilot.pause()
        assert f"{seeded + 3} open alerts · 0 unread" in header_text(fake_app)  # seen at once
        assert "gone" in [r[3].plain for r in rows(fake_app)]


async def test_live_alert_from_the_real_control_plane(
    live_cp: LiveControlPlane, live_shell: Shell
) -> None:
    vault_id = await asyncio.to_thread(live_cp.enroll_vault, "db-1")
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await wait_for(pilot, lambda: live_shell.online)
        alert, _ = await asyncio.to_thread(live_cp.raise_offline_alert, vault_id)
        await wait_for(pilot, lambda: "1 open alert · 1 unread" in header_text(app))
        await pilot.press("a")
        await wait_for(pilot, lambda: len(rows(app)) == 1)
        assert "1 open alert · 0 unread" in header_text(app)
        row = rows(app)[0]
        assert row[0].plain == "critical" and str(row[2]) == "db-1"
        assert row[3].plain == "db-1 is offline"

        async def server_state() -> str:
            page = await asyncio.to_thread(
                live_cp.server.run,
                live_cp.cp.alerts.list(live_cp.org_id, state=None, after=None, limit=10),
            )
            return str(page["items"][0]["state"])

        await pilot.press("k")
        await settle(pilot)
        assert await server_state() == "acknowledged"
        await wait_for(pilot, lambda: rows(app)[0][1].plain == "acknowledged")
        await pilot.press("f")
        await settle(pilot)
        assert await server_state() == "resolved"
        await wait_for(pilot, lambda: not rows(app))
        assert alert["id"]


def raise_real_offline(live_cp: LiveControlPlane, vault_id: str) -> int:
    """Silence a vault for an hour and run the control plane's own offline sweep."""
    import sqlalchemy as sa

    from control_plane import schema as t

    async def go() -> int:
        vaults = live_cp.cp.vaults
        old = vaults.clock() - timedelta(hours=1)
        update = sa.update(t.vaults).where(t.vaults.c.id == vault_id)
        async with vaults.engine.begin() as conn:
            await conn.execute(update.values(last_heartbeat_at=old))
        return int(await vaults.sweep_offline())

    return int(live_cp.server.run(go()))


async def test_offline_alert_shows_a_readable_time_not_iso(
    live_cp: LiveControlPlane, live_shell: Shell
) -> None:
    """The monitor's message carries an ISO time; the screen shows "YYYY-MM-DD HH:MM UTC"."""
    vault_id = await asyncio.to_thread(live_cp.enroll_vault, "db-1")
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await wait_for(pilot, lambda: live_shell.online)
        assert await asyncio.to_thread(raise_real_offline, live_cp, vault_id) == 1
        page = await asyncio.to_thread(
            live_cp.server.run,
            live_cp.cp.alerts.list(live_cp.org_id, state=None, after=None, limit=10),
        )
        [raw] = [a["message"] for a in page["items"] if a["vault_id"] == vault_id]
        assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", raw)  # what the server says
        await pilot.press("a")
        await wait_for(pilot, lambda: len(rows(app)) == 1)
        message = rows(app)[0][3].plain
        assert re.search(r"since before \d{4}-\d\d-\d\d \d\d:\d\d UTC$", message), message
        assert not re.search(r"\d\dT\d\d", message) and vault_id not in message
        assert message.startswith("vault db-1 has not sent")  # not "db-1 (db-1)"
