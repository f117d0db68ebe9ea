"""The fleet: every vault, live, with a filter-as-you-type box; smooth with 10,000 rows."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static
from textual.widgets.data_table import DuplicateKey, Row, RowKey

from apps.core.navigation import area
from apps.core.rowdiff import updates_in_place
from apps.core.rules import (
    LIVE,
    STATUS_TONES,
    count_text,
    last_seen_text,
    shown_status,
    text_or_dash,
)
from apps.core.viewmodels.vaults import VaultRow, VaultsState, VaultsViewModel
from apps.tui.screens.base import KeyVaultScreen, expires_text
from apps.tui.widgets.tables import SCROLLBAR, fit_widths
from apps.tui.widgets.tones import LIVE_STYLE, style_of

#: (header, key in VaultRow / the view model's sort columns, width)
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("Name", "name", 30),
    ("Status", "status", 9),
    ("Last seen", "last_seen", 10),
    ("Secrets", "secret_count", 8),
    ("Version", "version", 10),
    ("Cert expires", "cert_expiry", 12),
    ("ID", "id", 30),
)
#: the width each column keeps when the terminal is too narrow for all of them (the widest
#: give way first, cut with "…": a name keeps enough to be told apart, "offline" stays whole)
KEEP = {"name": 16, "status": 7, "last_seen": 9, "secret_count": 7, "version": 7, "cert_expiry": 7}
#: one shared (never mutated) cell per status: 10,000 rows need not build 10,000 Text objects
STATUS_CELLS = {status: Text(status, style=style_of(status)) for status in STATUS_TONES}
LIVE_CELL = Text(LIVE, style=LIVE_STYLE)
FIRST_ROWS = 150  # added at once on a rebuild: more than any terminal shows
CHUNK = 500  # then this many per step between other events (a keystroke waits for one step)
TICK_SECONDS = 15.0  # how often "12s ago" is recomputed for the rows on screen


class FleetTable(DataTable[Any]):
    """A DataTable whose columns all have fixed widths, so adding rows measures nothing.

    Textual measures every cell of every new row to size auto-width columns; with fixed widths
    that work is thrown away, and for 10,000 rows it is most of a rebuild's cost. Only the
    virtual size (rows × height) is still computed.
    """

    def on_resize(self, event: events.Resize) -> None:
        """A narrower or wider terminal: refit the columns instead of scrolling sideways."""
        self.refit()

    def refit(self) -> None:
        """Give each column its :data:`COLUMNS` width when they all fit, else cut the widest
        first (none below its :data:`KEEP` width); only the widths change, not the rows."""
        columns = self.ordered_columns
        if not self.size.width or [c.key.value for c in columns] != [k for _, k, _ in COLUMNS]:
            return  # not laid out yet, or not the fleet's columns
        natural = [width for _, _, width in COLUMNS]
        keep = [min(width, KEEP.get(key, 4)) for _, key, width in COLUMNS]
        room = self.size.width - SCROLLBAR - 2 * self.cell_padding * len(columns)
        widths = fit_widths(natural, keep, room)
        if [column.width for column in columns] == widths:
            return
        for column, width in zip(columns, widths, strict=True):
            column.width = width
        self._require_update_dimensions = True
        self._clear_caches()
        self.refresh()

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        """Skip per-cell measuring: every column has a fixed width."""
        if all(not column.auto_width for column in self.columns.values()):
            new_rows = ()
        super()._update_dimensions(new_rows)

    def add_keyed_rows(self, rows: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Append one-line rows ``(key, cells)``: what ``add_row`` does, done once per batch.

        ``add_row`` re-sorts the columns and re-sets the cursor (a reactive with watchers) for
        every row; for thousands of rows that is most of the time. Same resulting table
        (``tests/apps/tui/test_vaults_screen.py`` checks it against ``add_row``).
        """
        was_empty = self.row_count == 0
        columns = [column.key for column in self.ordered_columns]
        locations, data, table_rows, new = (
            self._row_locations,
            self._data,
            self.rows,
            self._new_rows,
        )
        index = first_new = self.row_count
        for key, cells in rows:
            row_key = RowKey(key)
            if row_key in locations:
                raise DuplicateKey(f"The row key {row_key!r} already exists.")
            locations[row_key] = index
            data[row_key] = dict(zip(columns, cells, strict=True))
            table_rows[row_key] = Row(row_key, 1)
            new.add(row_key)
            index += 1
        self._require_update_dimensions = True
        if first_new <= self.scroll_offset.y + self.size.height:
            self._update_count += 1  # the new rows may show: every cached line is stale
        else:
            # appended below the rows on screen: their cached lines and cells stay right (the
            # chunked fill of 10,000 rows would otherwise re-render the screen every step);
            # only the row offsets change
            self._offset_cache.clear()
        self.cursor_coordinate = self.cursor_coordinate
        if was_empty and self.row_count and self.show_cursor and self.cursor_type != "none":
            self._highlight_cursor()
        self.check_idle()
        self.refresh()


def plain(value: str) -> Text:
    """A cell shown exactly as given: names come from agents, so never parsed as markup (a
    string cell would be), and a ready Text skips the table's per-cell markup parsing."""
    return Text(value, no_wrap=True, overflow="ellipsis", end="")


def vault_cells(row: VaultRow, now: Any) -> tuple[Any, ...]:
    """The table cells of one vault, in :data:`COLUMNS` order."""
    status = shown_status(row)
    seen = last_seen_text(status, row.last_seen, now)
    return (
        plain(row.name),
        STATUS_CELLS.get(status) or plain(status),
        LIVE_CELL if seen == LIVE else plain(seen),
        plain(count_text(row.secret_count)),
        plain(text_or_dash(row.version)),
        expires_text(row.cert_expiry, now),
        plain(row.id),
    )


class VaultsScreen(KeyVaultScreen):
    """All vaults: filter, sort, open one, revoke one; status changes repaint single rows."""

    TITLE_TEXT = area("vaults").heading
    BINDINGS = [
        Binding("slash", "focus_filter", "Filter", key_display="/"),
        Binding("enter", "open", "Open vault", show=False),
        Binding("f5,ctrl+r", "refresh", "Reload", key_display="F5"),
        Binding("x", "revoke", "Revoke vault"),
        Binding("o", "cycle_sort", "Sort column"),
        Binding("O", "flip_sort", "Reverse sort", show=False),
        Binding("escape", "focus_table", "Back to table", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple[VaultRow, ...] = ()
        self._sorted_by: tuple[str, bool] = ("", False)
        #: cells per vault id, valid while the row object is the same (cleared by the tick)
        self._cells: dict[str, tuple[VaultRow, tuple[Any, ...]]] = {}
        self._now: datetime | None = None
        self._filled = 0  # rows of ``_shown`` added to the table so far
        self._generation = 0  # bumped by every rebuild; stale fill steps stop

    @property
    def model(self) -> VaultsViewModel:
        """The shell's fleet view model."""
        return self.shell.vaults

    def compose_body(self) -> ComposeResult:
        """Filter box, summary line, error line, the table."""
        yield Input(placeholder="Filter by name, id, status or version  ( / )", id="filter")
        yield Static(id="summary", classes="summary")
        yield Static(id="error", classes="error-line")
        table = FleetTable(id="vaults", cursor_type="row", zebra_stripes=True)
        for title, key, width in COLUMNS:
            table.add_column(title, key=key, width=width)
        yield table

    def on_mount(self) -> None:
        """Paint the current rows and follow the view model."""
        self._now = self.now()
        self.query_one("#filter", Input).value = self.model.state.filter
        self.set_interval(TICK_SECONDS, self.tick)
        self.watch_model(self.model.subscribe, self.show)
        self.show(self.model.state)
        self.query_one(FleetTable).focus()

    def show(self, state: VaultsState) -> None:
        """Repaint: single cells when only rows' contents changed, else rebuild the table."""
        table = self.query_one(FleetTable)
        changed = updates_in_place(self._shown, state.visible)
        if (state.sort, state.descending) != self._sorted_by:
            changed = None  # the header's sort arrow moves: rebuild
        self._shown = state.visible
        if changed is None:
            self._rebuild(table, state)
        else:
            for index, row in changed:
                if index < self._filled:  # rows not added yet get the new cells when added
                    for (_, key, _), cell in zip(COLUMNS, self._cells_of(row), strict=True):
                        table.update_cell(row.id, key, cell)
        self._summary(state)

    def _rebuild(self, table: FleetTable, state: VaultsState) -> None:
        """Replace every row (filter, sort or a new vault): a screenful now, the rest in chunks.

        Adding 10,000 rows to a DataTable takes far longer than a keystroke may; the rows a
        person can see are added at once and the others in :data:`CHUNK`-row steps between
        other events, so typing never waits for the whole table.
        """
        selected = self._selected_id()
        table.clear()
        self._filled = 0
        self._generation += 1
        self._fill(table, FIRST_ROWS)
        self._sorted_by = (state.sort, state.descending)
        arrow = " ▼" if state.descending else " ▲"
        titles = {key: title for title, key, _ in COLUMNS}
        for column in table.columns.values():
            key = str(column.key.value)
            column.label = Text(titles[key] + (arrow if key == state.sort else ""))
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected), animate=False)
        if self._filled < len(self._shown):
            self.call_after_refresh(self._fill_more, self._generation)

    def _fill(self, table: FleetTable, count: int) -> None:
        """Add the next ``count`` rows of what is shown."""
        cells_of = self._cells_of
        rows = self._shown[self._filled : self._filled + count]
        table.add_keyed_rows((row.id, cells_of(row)) for row in rows)
        self._filled = min(len(self._shown), self._filled + count)

    def _fill_more(self, generation: int) -> None:
        """One more chunk, unless the table was rebuilt since (then that rebuild goes on)."""
        if generation != self._generation or not self.is_mounted:
            return
        self._fill(self.query_one(FleetTable), CHUNK)
        if self._filled < len(self._shown):
            self.call_after_refresh(self._fill_more, generation)
        else:
            # tens of thousands of long-lived cells and rows: keep them out of the cyclic GC's
            # full collections, which otherwise stall a keystroke for 100 ms and more
            gc.freeze()

    def _cells_of(self, row: VaultRow) -> tuple[Any, ...]:
        """The row's cells, computed once per row object (until the next tick)."""
        cached = self._cells.get(row.id)
        if cached is not None and cached[0] is row:
            return cached[1]
        cells = vault_cells(row, self._now or self.now())
        self._cells[row.id] = (row, cells)
        return cells

    def tick(self) -> None:
        """Relative times move on: forget cached cells and repaint the rows on screen."""
        self._now = self.now()
        self._cells.clear()
        table = self.query_one(FleetTable)
        first = table.scroll_offset.y
        for row in self._shown[first : min(first + table.size.height, self._filled)]:
            for (_, key, _), cell in zip(COLUMNS, self._cells_of(row), strict=True):
                table.update_cell(row.id, key, cell)

    def _summary(self, state: VaultsState) -> None:
        if state.loading and not state.total:
            text = "Loading vaults…"
        elif not state.total:
            text = "No vaults yet. Press e to create an enrollment token for your first agent."
        else:
            text = f"{len(state.visible):,} of {state.total:,} vaults"
            if state.filter:
                text += f" matching “{state.filter}”"
            text += "  ·  Enter opens a vault  ·  click a header or press o to sort"
        self.query_one("#summary", Static).update(text)
        error = self.query_one("#error", Static)
        error.display = bool(state.error)
        error.update(f"Could not refresh: {state.error}" if state.error else "")

    def _selected_id(self) -> str | None:
        table = self.query_one(FleetTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return key.value

    def on_input_changed(self, event: Input.Changed) -> None:
        """Filter as you type."""
        if event.input.id == "filter":
            self.model.set_filter(event.value)

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        """Enter in the filter box goes to the table."""
        self.action_focus_table()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click on a header sorts by it (again: the other way round)."""
        self.model.set_sort(str(event.column_key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter (or a click) on a row opens the vault."""
        if event.row_key.value is not None:
            self._open(event.row_key.value)

    def action_focus_filter(self) -> None:
        """Put the cursor in the filter box."""
        self.query_one("#filter", Input).focus()

    def action_focus_table(self) -> None:
        """Back to the table."""
        self.query_one(FleetTable).focus()

    def action_open(self) -> None:
        """Open the selected vault."""
        vault_id = self._selected_id()
        if vault_id is not None:
            self._open(vault_id)

    def _open(self, vault_id: str) -> None:
        from apps.tui.screens.vault_detail import VaultDetailScreen

        self.app.push_screen(VaultDetailScreen(vault_id))

    def action_refresh(self) -> None:
        """Reload every vault from the control plane."""
        self.act(self.model.refresh, group="refresh")

    def action_cycle_sort(self) -> None:
        """Sort by the next column."""
        keys = [key for _, key, _ in COLUMNS]
        current = self.model.state.sort
        following = keys[(keys.index(current) + 1) % len(keys)] if current in keys else keys[0]
        self.model.set_sort(following, descending=False)

    def action_flip_sort(self) -> None:
        """Reverse the sort order."""
        self.model.set_sort(self.model.state.sort, descending=not self.model.state.descending)

    def action_revoke(self) -> None:
        """Revoke the selected vault (after a confirmation): its certificate stops working."""
        vault_id = self._selected_id()
        row = self.model.row(vault_id) if vault_id else None
        if row is None or row.revoked:
            self.notify("Select a vault that is not revoked yet.", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.act(lambda: self.model.revoke(row.id), done=f"Vault {row.name} revoked.")

        from apps.tui.widgets.typed_confirm import TypedConfirmScreen

        self.app.push_screen(
            TypedConfirmScreen(
                f"Revoke vault {row.name} ({row.id})? Its agent can no longer reach the "
                "control plane.",
                row.name or row.id,
                action="Revoke",
            ),
            answered,
        )
