"""Usage over time (QtCharts): one line per operation and one per vault, over 7, 30 or 90 days."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from PySide6.QtCharts import (
    QBarCategoryAxis,
    QBarSeries,
    QBarSet,
    QChart,
    QChartView,
    QDateTimeAxis,
    QValueAxis,
)
from PySide6.QtCore import QDateTime, QEvent, Qt
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import QApplication, QButtonGroup, QComboBox, QLabel, QPushButton, QWidget

from apps.core.navigation import area
from apps.core.rules import series_colour
from apps.desktop.tasks import run_task
from apps.desktop.views import follow, title_row, view_layout
from apps.desktop.views.ops_kit import show_status

if TYPE_CHECKING:
    from PySide6.QtGui import QShowEvent

    from apps.core.shell import Shell

RANGES = (7, 30, 90)
ALL_VAULTS = "All vaults"
CHECKED_STYLE = "QPushButton:checked { background: palette(highlight); color: white; }"


def day_ms(day: str) -> float:
    """An ISO date as milliseconds since the epoch (noon UTC, so no zone shifts it a day)."""
    moment = datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC)
    return moment.timestamp() * 1000


def totals_text(state: Any) -> str:
    """``4 operations · read 3 · write 1 · 2026-11-22 → 2026-11-28``."""
    parts = [f"{state.total:,} operation{'' if state.total == 1 else 's'}"]
    parts += [f"{op} {sum(v):,}" for op, v in sorted(state.by_operation.items())]
    if state.start:
        parts.append(f"{state.start} → {state.end}")
    return " · ".join(parts)


def date_ticks(count: int) -> int:
    """Ticks for a date axis over ``count`` days (each day a slot, ticks at midnights): a
    whole number of days between ticks, 5 to 8 ticks."""
    for ticks in (8, 7, 6, 5):
        if count % (ticks - 1) == 0:
            return ticks
    return 6 if count >= 5 else count + 1


def day_labels(days: tuple[str, ...], most: int = 10) -> list[str]:
    """'MM-DD' under at most ``most`` days, evenly spread; the other categories stay blank
    (distinct zero-width strings, as categories must differ) instead of elided to '…'."""
    step = max(1, -(-len(days) // most))
    return [day[5:] if i % step == 0 else "\u200b" * (i + 1) for i, day in enumerate(days)]


class UsageChart(QChartView):
    """Daily counts as bars, one distinctly coloured set per series, in the app's theme."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title = title
        self.setRenderHint(QPainter.RenderHint.Antialiasing)
        self.setMinimumHeight(220)
        self.plot = QChart()  # one chart for the view's life; series and axes are replaced
        self.plot.legend().setAlignment(Qt.AlignmentFlag.AlignRight)
        self.x_axis, self.y_axis = QBarCategoryAxis(), QValueAxis()
        self.y_axis.setLabelFormat("%d")
        self.plot.addAxis(self.x_axis, Qt.AlignmentFlag.AlignBottom)
        # 30 or 90 slots are too narrow for a date each: a date axis under the bars (one slot
        # a day, ticks at midnights) labels a few of them instead
        self.date_axis = QDateTimeAxis()
        self.date_axis.setFormat("MM-dd")
        self.date_axis.setGridLineVisible(False)
        self.plot.addAxis(self.date_axis, Qt.AlignmentFlag.AlignBottom)
        self.plot.addAxis(self.y_axis, Qt.AlignmentFlag.AlignLeft)
        self.setChart(self.plot)
        self._shown: tuple[tuple[str, ...], dict[str, tuple[int, ...]]] = ((), {})
        self.show_series((), {})

    def changeEvent(self, event: QEvent) -> None:
        """A theme switch repaints the chart in the new theme."""
        super().changeEvent(event)
        if event.type() in (
            QEvent.Type.PaletteChange,
            QEvent.Type.ApplicationPaletteChange,
            QEvent.Type.StyleChange,
        ):
            self.show_series(*self._shown)

    def show_series(self, days: tuple[str, ...], series: dict[str, tuple[int, ...]]) -> None:
        """Draw these series over ``days`` (titled as empty when there are none)."""
        self._shown = (days, series)
        chart = self.plot
        colours = QApplication.palette()  # the theme in force (also mid-switch)
        dark = colours.color(QPalette.ColorRole.Window).lightness() < 128
        chart.setTheme(
            QChart.ChartTheme.ChartThemeDark if dark else QChart.ChartTheme.ChartThemeLight
        )
        chart.setBackgroundBrush(colours.base())
        chart.removeAllSeries()
        chart.setTitle(self.title if series else f"{self.title} — no usage in this range")
        chart.legend().setVisible(bool(series))
        self.x_axis.clear()
        self.x_axis.append(day_labels(days))
        # 30 or 90 narrow slots elide any date: the date axis labels them, the title names
        # the range
        wide = len(days) > 10
        self.x_axis.setLabelsVisible(not wide)
        self.date_axis.setVisible(wide)
        if wide:
            first = QDateTime.fromString(days[0], Qt.DateFormat.ISODate)
            self.date_axis.setRange(first, first.addDays(len(days)))
            self.date_axis.setTickCount(date_ticks(len(days)))
            self.date_axis.setLabelsColor(self.y_axis.labelsColor())
            if series:
                chart.setTitle(f"{self.title} · {days[0]} → {days[-1]}")
        bars = QBarSeries()
        top = 0
        for at, (name, counts) in enumerate(sorted(series.items())):
            one = QBarSet(name)
            one.setColor(QColor(series_colour(at)))
            one.append([float(c) for c in counts[: len(days)]])
            bars.append(one)
            top = max(top, *counts) if counts else top
        if series:
            chart.addSeries(bars)
            bars.attachAxis(self.x_axis)
            bars.attachAxis(self.y_axis)
        self.y_axis.setRange(0, max(4, top + (top + 4) // 5))
        self.y_axis.setTickCount(5)

    def _sets(self) -> list[QBarSet]:
        found: list[QBarSet] = []
        for drawn in self.plot.series():
            if isinstance(drawn, QBarSeries):
                found.extend(drawn.barSets())
        return found

    def counts(self, name: str) -> list[int]:
        """The daily counts drawn for one series (oldest first); [] when it is not drawn."""
        for one in self._sets():
            if one.label() == name:
                return [int(one.at(i)) for i in range(one.count())]
        return []

    def colours(self) -> list[str]:
        """The bar colours, one per series, in drawing order."""
        return [one.color().name() for one in self._sets()]

    def series_names(self) -> list[str]:
        """The names of the series drawn now."""
        return [one.label() for one in self._sets()]


class UsageView(QWidget):
    """Secret operations per day, by operation and by vault, with totals."""

    def __init__(self, shell: Shell, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shell = shell
        self.vm = shell.usage
        self.range_buttons = QButtonGroup(self)
        self.vault = QComboBox()
        self.vault.setMinimumWidth(260)
        self.totals = QLabel()
        self.totals.setObjectName("summary")
        self.by_operation = UsageChart("Operations per day")
        self.by_vault = UsageChart("Operations per day, by vault")
        self._vault_ids: tuple[tuple[str, str], ...] = ()
        self._build()
        self._loaded = False
        follow(self, self.vm.subscribe, self.paint)
        follow(self, shell.vaults.subscribe, lambda _state: self._fill_vaults())
        self._fill_vaults()
        self.paint(self.vm.state)

    def _build(self) -> None:
        buttons: list[QWidget] = []
        for days in RANGES:
            button = QPushButton(f"{days} days")
            button.setCheckable(True)
            button.setStyleSheet(CHECKED_STYLE)
            self.range_buttons.addButton(button, days)
            buttons.append(button)
        self.range_buttons.idClicked.connect(self.set_range)
        reload_button = QPushButton("Reload")
        reload_button.clicked.connect(self.refresh)
        self.vault.currentIndexChanged.connect(self._vault_picked)
        row, _title = title_row(area("usage").heading, *buttons, self.vault, reload_button)
        layout = view_layout(self)
        layout.addLayout(row)
        layout.addWidget(self.totals)
        layout.addWidget(self.by_operation, 1)
        layout.addWidget(self.by_vault, 1)

    def showEvent(self, event: QShowEvent) -> None:
        """Load the first time the view is shown."""
        super().showEvent(event)
        if not self._loaded:
            self._loaded = True
            self.refresh()

    def refresh(self) -> None:
        """Reload the counts."""
        run_task(self, self.vm.refresh())

    def set_range(self, days: int) -> None:
        """Show the last ``days`` days."""
        run_task(self, self.vm.set_range(days))

    def set_vault(self, vault_id: str | None) -> None:
        """Count one vault only (None: all) — what picking it in the list does."""
        at = self.vault.findData(vault_id) if vault_id else 0
        self.vault.setCurrentIndex(max(at, 0))

    def _vault_picked(self, at: int) -> None:
        vault_id = self.vault.itemData(at) if at > 0 else None
        if vault_id != self.vm.state.vault_id:
            run_task(self, self.vm.set_vault(vault_id))

    def _names(self) -> dict[str, str]:
        return {v.id: v.name for v in self.shell.vaults.state.rows}

    def _fill_vaults(self) -> None:
        """The vault list from the vaults view model (rebuilt only when vaults come or go)."""
        vaults = tuple(sorted((v.name, v.id) for v in self.shell.vaults.state.rows))
        if vaults == self._vault_ids:
            return
        self._vault_ids = vaults
        current = self.vm.state.vault_id
        self.vault.blockSignals(True)
        self.vault.clear()
        self.vault.addItem(ALL_VAULTS, None)
        for name, vault_id in vaults:
            self.vault.addItem(f"{name} ({vault_id})", vault_id)
        self.vault.setCurrentIndex(max(self.vault.findData(current), 0) if current else 0)
        self.vault.blockSignals(False)

    def paint(self, state: Any) -> None:
        """Range buttons, totals and both charts from the state."""
        button = self.range_buttons.button(state.range_days)
        if button is not None:
            button.setChecked(True)
        text = totals_text(state) + (" · loading…" if state.loading else "")
        show_status(self.totals, text, state.error)
        if state.loading:
            return
        self.by_operation.show_series(state.days, state.by_operation)
        names = self._names()
        by_vault = {names.get(k, k): v for k, v in state.by_vault.items()}
        self.by_vault.show_series(state.days, by_vault)
