"""The central metadata audit log: filters by action and source (server) and by text (local)."""

from __future__ import annotations

import inspect
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.suggester import Suggester
from textual.widgets import DataTable, Input, Select, Static

from apps.core.navigation import area
from apps.tui.screens.base import KeyVaultScreen
from apps.tui.widgets.tables import Column, CutTable, fill_table, when

COLUMNS = (
    Column("#", "seq", keep=5),
    Column("When (UTC)", "at", keep=16),  # a cut timestamp says nothing: the names give way
    Column("Actor", "actor"),
    Column("Action", "action"),
    Column("Target", "target"),
    Column("Source", "source"),
    Column("Outcome", "outcome", keep=7),
)
CONTROL_PLANE = "control_plane"


class AuditScreen(KeyVaultScreen):
    """Who did what, when, from where — metadata only, newest first."""

    TITLE_TEXT = area("audit").heading
    DEFAULT_CSS = """
    AuditScreen #audit-filters { height: 3; padding: 0 1; }
    AuditScreen #audit-filters Input { width: 1fr; }
    AuditScreen #audit-source { width: 36; }
    AuditScreen #audit { height: 1fr; }
    AuditScreen #audit-status { height: 1; padding: 0 1; color: $text-muted; }
    AuditScreen #audit-status.error { color: $error; }
    """
    BINDINGS = [
        Binding("m", "more", "Load more"),
        Binding("slash", "focus_text", "Search"),
        Binding("f5,ctrl+r", "refresh", "Reload", key_display="F5"),
        Binding("escape", "focus_table", "Back to the table", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        """Filters, the table, the status line."""
        with Horizontal(id="audit-filters"):
            yield Input(
                placeholder="action (exact), e.g. policy.create",
                id="audit-action",
                suggester=SeenValues(self.shell.audit, "action"),
            )
            yield Select(self._sources(), prompt="any source", id="audit-source")
            yield Input(placeholder="/ search loaded rows", id="audit-text")
        yield CutTable(COLUMNS, id="audit")
        yield Static("", id="audit-status")

    def _sources(self) -> list[tuple[str, str]]:
        vaults = getattr(self.shell.vaults.state, "rows", ())
        return [("control plane", CONTROL_PLANE)] + [(f"{v.name} ({v.id})", v.id) for v in vaults]

    def on_mount(self) -> None:
        """Paint and load; new entries arrive on top while the screen is shown."""
        model = self.shell.audit
        model.live = True
        self.watch_model(model.subscribe, self.paint)
        self.paint(model.state)
        self.query_one("#audit", DataTable).focus()
        self.action_refresh()

    def on_screen_suspend(self) -> None:
        """Not shown: no need to follow new entries."""
        self.shell.audit.live = False

    def on_screen_resume(self) -> None:
        """Shown again: follow new entries."""
        self.shell.audit.live = True

    def paint(self, state: Any) -> None:
        """Rows matching the local text filter, newest first; the status line."""
        rows = sorted(state.visible, key=lambda r: r.seq, reverse=True)
        names = self.shell.names
        fill_table(
            self.query_one("#audit", DataTable),
            (
                (
                    str(r.seq),
                    (
                        str(r.seq),
                        when(r.at),
                        names.label(r.actor) or "—",
                        r.action,
                        names.label(r.target, r.vault_id) or "—",
                        names.source(r.source) or "—",
                        r.outcome,
                    ),
                )
                for r in rows
            ),
        )
        status = self.query_one("#audit-status", Static)
        status.set_class(bool(state.error), "error")
        more = " · m load more" if state.has_more else ""
        loading = " · loading…" if state.loading else ""
        shown = f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}"
        if state.text.strip():
            shown = f"{len(rows)} of {len(state.rows)} loaded entries match {state.text.strip()!r}"
        status.update(f"⚠ {state.error}" if state.error else f"{shown}{more}{loading}")

    def _run(self, result: Any) -> None:
        if inspect.isawaitable(result):
            self.run_worker(result, group="audit-load", exclusive=True)

    def action_refresh(self) -> None:
        """Reload from the first page."""
        self._run(self.shell.audit.refresh())

    def action_more(self) -> None:
        """Fetch the next page."""
        if self.shell.audit.state.has_more:
            self._run(self.shell.audit.load_more())
        else:
            self.notify("no more entries")

    def action_focus_text(self) -> None:
        """Jump to the search box."""
        self.query_one("#audit-text", Input).focus()

    def action_focus_table(self) -> None:
        """Back to the table."""
        self.query_one("#audit", DataTable).focus()

    @on(Input.Submitted, "#audit-action")
    def _action_filter(self, event: Input.Submitted) -> None:
        self._run(self.shell.audit.set_filter(action=event.value.strip() or ""))

    @on(Select.Changed, "#audit-source")
    def _source_filter(self, event: Select.Changed) -> None:
        value = event.value if isinstance(event.value, str) else ""
        self._run(self.shell.audit.set_filter(source=value))

    @on(Input.Changed, "#audit-text")
    def _text_filter(self, event: Input.Changed) -> None:
        self._run(self.shell.audit.set_filter(text=event.value))


class SeenValues(Suggester):
    """Suggests action names the log has shown (completion with the right arrow)."""

    def __init__(self, model: Any, field: str) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.model, self.field = model, field

    async def get_suggestion(self, value: str) -> str | None:
        """The first seen value that starts with what was typed."""
        found = self.model.suggest(self.field, value) if value else []
        return found[0] if found else None
