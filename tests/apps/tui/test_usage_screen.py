"""The usage screen over real counts: agents' audit events ingested by the real control plane."""

from __future__ import annotations

from datetime import UTC, datetime

from textual.widgets import Select, Static
from textual_plotext import PlotextPlot

from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from apps.tui.screens.usage import UsageScreen
from tests.apps.conftest import LiveControlPlane
from tests.apps.tui.conftest import SIZE
from tests.apps.tui.test_secrets_screen import wait_for


def ingest(live_cp: LiveControlPlane, vault_id: str, ops: list[str]) -> None:
    """Hand the control plane a batch of an agent's audit events, as the uplink does."""
    at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    events = [
        {"event_id": f"e{i}", "op": op, "outcome": "ok", "at": at} for i, op in enumerate(ops)
    ]
    live_cp.server.run(live_cp.cp.audit.ingest(vault_id, events))


def chart_text(screen: UsageScreen, selector: str) -> str:
    """What a chart draws, as plain text."""
    return str(screen.query_one(selector, PlotextPlot).render())


async def test_usage_charts(live_shell: Shell, live_cp: LiveControlPlane) -> None:
    busy = live_cp.enroll_vault("busy-1")
    idle = live_cp.enroll_vault("idle-1")
    ingest(live_cp, busy, ["read", "read", "read", "write"])
    app = KeyVaultApp(live_shell)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("u")
        await wait_for(pilot, lambda: isinstance(app.screen, UsageScreen))
        screen = app.screen
        assert isinstance(screen, UsageScreen)
        totals = screen.query_one("#usage-totals", Static)
        await wait_for(pilot, lambda: "4 operations" in str(totals.render()))
        assert "read 3" in str(totals.render()) and "write 1" in str(totals.render())
        assert len(live_shell.usage.state.days) == 30
        await pilot.pause(0.2)
        by_op = chart_text(screen, "#by-operation")
        assert "read" in by_op and "write" in by_op
        assert "busy-1" in chart_text(screen, "#by-vault")

        await pilot.press("7")
        await wait_for(pilot, lambda: len(live_shell.usage.state.days) == 7)
        assert live_shell.usage.state.total == 4

        # one vault with no usage: an empty chart that says so
        screen.query_one("#usage-vault", Select).value = idle
        await wait_for(pilot, lambda: live_shell.usage.state.vault_id == idle)
        await wait_for(pilot, lambda: "0 operations" in str(totals.render()))
        await pilot.pause(0.2)
        assert "no usage in this range" in chart_text(screen, "#by-operation")
