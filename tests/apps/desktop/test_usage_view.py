"""The usage view over real counts: agents' audit events ingested by the real control plane."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pytestqt.qtbot import QtBot

from apps.core.shell import Shell
from apps.desktop.views.usage import UsageView
from tests.apps.conftest import LiveControlPlane
from tests.apps.desktop.conftest import drive
from tests.apps.desktop.ops_helpers import shoot

WAIT = 15_000


def ingest(live_cp: LiveControlPlane, vault_id: str, ops: list[str]) -> None:
    """Hand the control plane a batch of an agent's audit events, as the uplink does."""
    at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    events = [
        {"event_id": f"e{i}", "op": op, "outcome": "ok", "at": at} for i, op in enumerate(ops)
    ]
    live_cp.server.run(live_cp.cp.audit.ingest(vault_id, events))


def test_usage_charts(qtbot: QtBot, live_shell: Shell, live_cp: LiveControlPlane) -> None:
    busy = live_cp.enroll_vault("busy-1")
    idle = live_cp.enroll_vault("idle-1")
    ingest(live_cp, busy, ["read", "read", "read", "write"])
    drive(qtbot, live_shell.vaults.refresh())
    view = UsageView(live_shell)
    qtbot.addWidget(view)
    view.show()
    qtbot.waitUntil(lambda: view.totals.text().startswith("4 operations"), timeout=WAIT)
    assert "read 3" in view.totals.text() and "write 1" in view.totals.text()
    assert len(live_shell.usage.state.days) == 30
    assert view.range_buttons.checkedId() == 30
    assert view.by_operation.series_names() == ["read", "write"]
    assert view.by_vault.series_names() == ["busy-1"]  # named, not the vault id
    read = view.by_operation.counts("read")
    assert len(read) == 30 and read[-1] == 3 and sum(read) == 3  # today's count, last point
    shoot(view, "usage")

    view.range_buttons.button(7).click()
    qtbot.waitUntil(lambda: len(live_shell.usage.state.days) == 7, timeout=WAIT)
    qtbot.waitUntil(lambda: len(view.by_operation.counts("read")) == 7, timeout=WAIT)
    assert live_shell.usage.state.total == 4

    # the vault list comes from the vaults; one vault with no usage: an empty chart that says so
    assert view.vault.count() == 3
    view.set_vault(idle)
    qtbot.waitUntil(lambda: view.totals.text().startswith("0 operations"), timeout=WAIT)
    assert live_shell.usage.state.vault_id == idle
    assert view.by_operation.series_names() == []
    assert "no usage in this range" in view.by_operation.chart().title()


def test_daily_counts_are_bars_in_distinct_colours_and_follow_the_dark_theme(qapp: Any) -> None:
    from PySide6.QtCharts import QBarSeries

    from apps.desktop import theme
    from apps.desktop.views.usage import UsageChart

    chart = UsageChart("Operations per day")
    days = ("2026-01-01", "2026-01-02", "2026-01-03")
    chart.show_series(days, {"read": (1, 2, 3), "write": (0, 1, 0), "list": (4, 0, 2)})
    assert all(isinstance(s, QBarSeries) for s in chart.plot.series())
    assert chart.counts("list") == [4, 0, 2]
    assert len(set(chart.colours())) == 3
    long = tuple(f"2026-01-{d:02d}" for d in range(1, 31))
    chart.show_series(long, {"read": tuple(range(30))})
    # 30 narrow slots would elide every date: the range goes in the title instead
    assert not chart.x_axis.labelsVisible() and "2026-01-01 → 2026-01-30" in chart.plot.title()
    # ...and a date axis labels a few of them (one slot a day, ticks at midnights)
    assert chart.date_axis.isVisible() and chart.date_axis.labelsVisible()
    assert chart.date_axis.min().toString("yyyy-MM-dd") == "2026-01-01"
    assert chart.date_axis.min().daysTo(chart.date_axis.max()) == 30
    assert chart.date_axis.tickCount() == 7  # every 5 days
    chart.show_series(days, {"read": (1, 2, 3)})
    assert chart.x_axis.labelsVisible() and chart.x_axis.categories() == list(days_short(days))
    assert not chart.date_axis.isVisible()
    try:
        theme.apply(qapp, "dark")  # no redraw asked: the chart follows the theme by itself
        qapp.processEvents()
        assert chart.plot.backgroundBrush().color().lightness() < 100  # not white in dark
        theme.apply(qapp, "light")
        qapp.processEvents()
        assert chart.plot.backgroundBrush().color().lightness() > 150
    finally:
        theme.apply(qapp, "light")


def days_short(days: tuple[str, ...]) -> list[str]:
    """'MM-DD' of each day."""
    return [d[5:] for d in days]
