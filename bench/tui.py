"""Benchmark of the TUI's fleet screen with 10,000 vaults: ``python -m bench.tui``.

Runs the real :class:`apps.tui.app.KeyVaultApp` headless (Textual's ``run_test``) over the
in-memory ``FakeControlPlane`` seeded with ``--vaults`` vaults, and times, with
``time.perf_counter`` around the pilot calls:

* **first paint**: app start → the first paint of the vaults table with rows in it (the
  shell's first load of all vaults included), ``--starts`` times after one uncounted warm-up;
* **all rows loaded**: app start → every vault is a row of the table and painted (rows past
  the first screenful are added in chunks between events);
* **filter keystroke**: one key typed in the filter box → the table rebuilt and refreshed,
  ``--keys`` keystrokes that each change the rows shown: narrow ("1", "12", …) and widen
  again (backspace back to 10,000 rows);
* **live event**: one ``vault.status`` event for a visible row → that row repainted,
  ``--events`` times.

Baseline in the same run: a bare Textual ``App`` with one plain ``DataTable`` doing the same
work with ``add_rows`` / ``clear`` / ``update_cell`` on the same rows. Targets: first paint
≤ 1 s, keystroke ≤ 100 ms, event ≤ 500 ms (p95).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from textual.app import App, ComposeResult
from textual.coordinate import Coordinate
from textual.widgets import DataTable

from apps.tui.app import KeyVaultApp
from apps.tui.screens.vaults import COLUMNS, FleetTable, VaultsScreen, vault_cells
from common.events import VAULT_STATUS
from tests.apps.fake_cp import NOW, FakeControlPlane
from tests.apps.fake_shell import FakeStream, build_fake_shell

SIZE = (140, 40)
TYPED = "1234"  # every key changes the rows shown (narrows, then widens back)
TARGETS = {
    "first paint": 1000.0,
    "all rows loaded": float("inf"),
    "filter keystroke": 100.0,
    "live event": 500.0,
}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def _keystrokes(count: int) -> list[str]:
    """Type :data:`TYPED` and erase it again, until ``count`` keys."""
    cycle = [*TYPED, *["backspace"] * len(TYPED)]
    return [cycle[i % len(cycle)] for i in range(count)]


def _matches(rows: list[Any], text: str) -> list[Any]:
    return [r for r in rows if text.lower() in r.haystack] if text else rows


class PaintClock:
    """Records when the app's screen was last rendered (the compositor's update is computed
    headless too; only the write to a terminal is skipped)."""

    def __init__(self, app: App[Any]) -> None:
        self.paints: list[float] = []
        self.changed = 0.0
        original = app._display

        def display(screen: Any, renderable: Any) -> None:
            if renderable is not None:
                self.paints.append(time.perf_counter())
            original(screen, renderable)

        app._display = display  # type: ignore[method-assign]

    def mark(self, _state: Any = None) -> None:
        """The table has the change (called right after the screen's own listener)."""
        self.changed = time.perf_counter()

    async def until_painted(self, started: float) -> float:
        """Milliseconds from ``started`` to the first paint after the last change."""
        while True:
            after = [p for p in self.paints if p > self.changed >= started]
            if after:
                self.paints.clear()
                return (after[0] - started) * 1000
            await asyncio.sleep(0.0005)


async def _timed(clock: PaintClock, work: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await work()
    return await clock.until_painted(started)


# ------------------------------------------------------------------------------ KeyVaultApp


async def _app_first_paint(fake: FakeControlPlane, n: int) -> tuple[float, float]:
    """(ms to the first paint showing vault rows, ms until all ``n`` rows are in the table)."""
    shell = build_fake_shell(fake)
    started = time.perf_counter()
    app = KeyVaultApp(shell, clock=lambda: NOW, start="vaults")
    clock = PaintClock(app)

    def rows() -> int:
        screen = app.screen
        return screen.query_one(FleetTable).row_count if isinstance(screen, VaultsScreen) else 0

    async with app.run_test(size=SIZE):
        while rows() == 0:
            await asyncio.sleep(0.0005)
        clock.mark()
        first = await clock.until_painted(started)
        while rows() < n:
            await asyncio.sleep(0.0005)
        clock.mark()
        full = await clock.until_painted(started)
    await shell.close()
    return first, full


async def _app_interactive(
    fake: FakeControlPlane, keys: int, events: int
) -> dict[str, list[float]]:
    shell = build_fake_shell(fake)
    app = KeyVaultApp(shell, clock=lambda: NOW, start="vaults")
    out: dict[str, list[float]] = {"filter keystroke": [], "live event": []}
    clock = PaintClock(app)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        shell.vaults.subscribe(clock.mark)  # after the screen's own listener
        await pilot.press("slash")
        for key in _keystrokes(keys):

            async def press(k: str = key) -> None:
                await pilot.press(k)

            out["filter keystroke"].append(await _timed(clock, press))
        await pilot.press(*["backspace"] * len(TYPED), "escape")  # all rows again
        stream = shell.stream
        assert isinstance(stream, FakeStream)
        target = shell.vaults.state.visible[3]
        for i in range(events):
            status = "offline" if i % 2 == 0 else "online"
            data = {"vault_id": target.id, "status": status}

            async def event(d: dict[str, Any] = data) -> None:
                stream.emit(VAULT_STATUS.name, d)

            out["live event"].append(await _timed(clock, event))
        table = app.screen.query_one(FleetTable)
        assert table.get_row(target.id)[1].plain in ("online", "offline")
    await shell.close()
    return out


# ------------------------------------------------------------------------------ baseline


class BareApp(App[None]):
    """A plain DataTable filled with ``add_rows``: what Textual itself costs."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        """One table."""
        yield DataTable()

    def on_mount(self) -> None:
        """Columns and every row."""
        table = self.query_one(DataTable)
        table.add_columns(*(title for title, _, _ in COLUMNS))
        table.add_rows(self.rows)


async def _bare(
    fake: FakeControlPlane, starts: int, keys: int, events: int
) -> dict[str, list[float]]:
    from apps.core.viewmodels.vaults import VaultRow

    vault_rows = sorted(
        (VaultRow.from_json(d) for d in fake.vaults.values()), key=lambda r: r.name.lower()
    )
    out = await _bare_starts(vault_rows, starts)
    out.update(await _bare_interactive(vault_rows, keys, events))
    return out


async def _bare_starts(vault_rows: list[Any], starts: int) -> dict[str, list[float]]:
    """First paint of the bare table (it adds every row before its first paint)."""
    out: dict[str, list[float]] = {"first paint": []}
    for _ in range(starts + 1):
        started = time.perf_counter()
        cells = [vault_cells(r, NOW) for r in vault_rows]
        app = BareApp(cells)
        clock = PaintClock(app)
        async with app.run_test(size=SIZE):
            while app.query_one(DataTable).row_count != len(cells):
                await asyncio.sleep(0.0005)
            clock.mark()
            out["first paint"].append(await clock.until_painted(started))
    out["first paint"].pop(0)  # warm-up
    out["all rows loaded"] = out["first paint"]
    return out


async def _bare_interactive(
    vault_rows: list[Any], keys: int, events: int
) -> dict[str, list[float]]:
    """Filter rebuilds (clear + add_rows) and single-cell updates on the bare table."""
    out: dict[str, list[float]] = {"filter keystroke": [], "live event": []}
    app = BareApp([vault_cells(r, NOW) for r in vault_rows])
    clock = PaintClock(app)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.query_one(DataTable)
        text = ""
        for key in _keystrokes(keys):
            text = text[:-1] if key == "backspace" else text + key

            async def rebuild(t: str = text) -> None:
                table.clear()
                table.add_rows(vault_cells(r, NOW) for r in _matches(vault_rows, t))
                clock.mark()

            out["filter keystroke"].append(await _timed(clock, rebuild))
        table.clear()
        table.add_rows(vault_cells(r, NOW) for r in vault_rows)  # all rows again
        for i in range(events):

            async def update(i: int = i) -> None:
                table.update_cell_at(Coordinate(3, 1), "offline" if i % 2 == 0 else "online")
                clock.mark()

            out["live event"].append(await _timed(clock, update))
    return out


# ------------------------------------------------------------------------------ report


def _row(label: str, app: list[float], bare: list[float]) -> str:
    p50, p95 = statistics.median(app), _percentile(app, 0.95)
    b50, b95 = statistics.median(bare), _percentile(bare, 0.95)
    target = TARGETS[label]
    verdict = (
        "-"
        if target == float("inf")
        else (f"≤ {target:.0f} ms: {'met' if p95 <= target else 'NOT met'}")
    )
    return (
        f"| {label} | {len(app)} | {p50:.1f} | {p95:.1f} | {b50:.1f} | {b95:.1f} | "
        f"{p50 / b50:.2f}x | {verdict} |"
    )


async def _main(args: argparse.Namespace) -> int:
    load_before = os.getloadavg()
    fake = FakeControlPlane().seed(vaults=args.vaults)
    app: dict[str, list[float]] = {"first paint": [], "all rows loaded": []}
    await _app_first_paint(fake, args.vaults)  # warm-up: imports, caches (not counted)
    for _ in range(args.starts):
        first, full = await _app_first_paint(fake, args.vaults)
        app["first paint"].append(first)
        app["all rows loaded"].append(full)
    app.update(await _app_interactive(fake, args.keys, args.events))
    bare = await _bare(fake, args.starts, args.keys, args.events)
    load_after = os.getloadavg()
    print(
        f"TUI fleet screen, {args.vaults} vaults, headless {SIZE[0]}x{SIZE[1]}; load average "
        f"{load_before[0]:.2f} -> {load_after[0]:.2f} (1 min), {os.cpu_count()} cores\n"
    )
    print("| measured | n | p50 ms | p95 ms | bare DataTable p50 | bare p95 | p50 ratio | target |")
    print("|---|---|---|---|---|---|---|---|")
    met = True
    for label in TARGETS:
        print(_row(label, app[label], bare[label]))
        met &= _percentile(app[label], 0.95) <= TARGETS[label]
    return 0 if met else 1


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vaults", type=int, default=10_000)
    parser.add_argument("--starts", type=int, default=5, help="app starts measured")
    parser.add_argument("--keys", type=int, default=20, help="filter keystrokes measured")
    parser.add_argument("--events", type=int, default=20, help="vault.status events measured")
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
