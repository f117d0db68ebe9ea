"""Usage over time: one line per operation and one per vault, over 7, 30 or 90 days."""

from __future__ import annotations

import inspect
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Select, Static
from textual_plotext import PlotextPlot

from apps.core.navigation import area
from apps.core.rules import series_colour
from apps.tui.screens.base import KeyVaultScreen

RANGES = (7, 30, 90)


class UsageScreen(KeyVaultScreen):
    """Secret operations per day, by operation and by vault."""

    TITLE_TEXT = area("usage").heading
    DEFAULT_CSS = """
    UsageScreen #usage-bar { height: 3; padding: 0 1; }
    UsageScreen #usage-range { width: auto; padding: 1 2 0 0; }
    UsageScreen #usage-vault { width: 40; }
    UsageScreen #usage-totals { height: 1; padding: 0 1; color: $text-muted; }
    UsageScreen #usage-totals.error { color: $error; }
    UsageScreen PlotextPlot { height: 1fr; }
    """
    BINDINGS = [
        Binding("7", "range(7)", "Last 7 days"),
        Binding("3", "range(30)", "Last 30 days"),
        Binding("9", "range(90)", "Last 90 days"),
        Binding("f5,ctrl+r", "refresh", "Reload", key_display="F5"),
    ]

    def compose_body(self) -> ComposeResult:
        """The range, the vault filter, the totals, two charts."""
        with Horizontal(id="usage-bar"):
            yield Static("", id="usage-range")
            yield Select(self._vaults(), prompt="all vaults", id="usage-vault")
        yield Static("", id="usage-totals")
        yield PlotextPlot(id="by-operation")
        yield PlotextPlot(id="by-vault")

    def _vaults(self) -> list[tuple[str, str]]:
        return [(f"{v.name} ({v.id})", v.id) for v in getattr(self.shell.vaults.state, "rows", ())]

    def _names(self) -> dict[str, str]:
        return {v.id: v.name for v in getattr(self.shell.vaults.state, "rows", ())}

    def on_mount(self) -> None:
        """Paint and load."""
        model = self.shell.usage
        self.watch_model(model.subscribe, self.paint)
        self.paint(model.state)
        self.action_refresh()

    def paint(self, state: Any) -> None:
        """The header line and both charts from the state."""
        picks = Text()
        for days in RANGES:
            picks.append(f" {days} d ", style="reverse bold" if days == state.range_days else "")
            picks.append(" ")
        picks.append(f"  {state.start} → {state.end}" if state.start else "")
        self.query_one("#usage-range", Static).update(picks)
        totals = self.query_one("#usage-totals", Static)
        totals.set_class(bool(state.error), "error")
        ops = " · ".join(f"{op} {sum(v):,}" for op, v in sorted(state.by_operation.items()))
        text = Text.assemble((f"{state.total:,}", "bold"), " operations", f": {ops}" if ops else "")
        if state.loading:
            text.append(" · loading…")
        totals.update(Text(f"⚠ {state.error}") if state.error else text)
        self._chart("#by-operation", "Operations per day", state.days, state.by_operation)
        names = self._names()
        series = {names.get(k, k): v for k, v in state.by_vault.items()}
        self._chart("#by-vault", "Operations per day, by vault", state.days, series)

    def _chart(
        self, selector: str, title: str, days: tuple[str, ...], series: dict[str, Any]
    ) -> None:
        chart = self.query_one(selector, PlotextPlot)
        plt = chart.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(title)
        xs: list[float] = [float(i) for i in range(1, len(days) + 1)]
        if not xs or not series:
            plt.title(f"{title} — no usage in this range")
        if xs and series:  # daily counts are bars, one distinct colour per series
            names = sorted(series)
            # plotext takes one label and colour per set (its stub says otherwise)
            options: dict[str, Any] = {
                "labels": names,
                "width": 0.6,  # gaps between the days
                "color": [_rgb(series_colour(i)) for i in range(len(names))],
            }
            labels = [day[5:] for day in days]  # one group of bars per day, labelled
            plt.multiple_bar(labels, [list(series[n])[: len(xs)] for n in names], **options)
            if len(days) > 10:  # 30 or 90 days: a label every few groups stays readable
                step = max(1, len(days) // 8)
                plt.xticks(xs[::step], labels[::step])
        if series:
            plt.ylim(0, None)
        chart.refresh()

    def _run(self, result: Any) -> None:
        if inspect.isawaitable(result):
            self.run_worker(result, group="usage-load", exclusive=True)

    def action_refresh(self) -> None:
        """Reload the counts."""
        self._run(self.shell.usage.refresh())

    def action_range(self, days: int) -> None:
        """Show the last ``days`` days."""
        self._run(self.shell.usage.set_range(days))

    @on(Select.Changed, "#usage-vault")
    def _vault(self, event: Select.Changed) -> None:
        vault_id = event.value if isinstance(event.value, str) else None
        if vault_id != self.shell.usage.state.vault_id:
            self._run(self.shell.usage.set_vault(vault_id))


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    """``#rrggbb`` as plotext's (r, g, b)."""
    value = hex_colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
