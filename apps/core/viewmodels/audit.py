"""The central audit log: newest first (keyset by ``seq``), live, server and local filters,
and suggestions for the action and source filters from what has been seen."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

from apps.core.filtering import matching
from apps.core.viewmodels.base import Listener, ViewModel, when

PAGE = 100


@dataclass(frozen=True)
class AuditRow:
    """One audit entry (metadata only); ``vault_id`` is set when a vault reported it."""

    seq: int
    at: datetime | None
    actor: str | None
    action: str
    target: str | None
    source: str
    vault_id: str | None
    outcome: str
    haystack: str = field(default="", repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AuditRow:
        """A row from an entry of ``GET /audit``."""
        source = str(doc.get("source") or "")
        values = [doc.get(k) for k in ("actor", "action", "target", "outcome")] + [source]
        return cls(
            seq=int(doc["seq"]),
            at=when(doc.get("at")),
            actor=doc.get("actor"),
            action=str(doc.get("action") or ""),
            target=doc.get("target"),
            source=source,
            vault_id=source if source.startswith("vlt_") else None,
            outcome=str(doc.get("outcome") or ""),
            haystack=" ".join(str(v) for v in values if v).lower(),
        )


@dataclass(frozen=True)
class AuditState:
    """Loaded entries (``rows``), those matching ``text`` (``visible``), the filters."""

    rows: tuple[AuditRow, ...] = ()
    visible: tuple[AuditRow, ...] = ()
    action: str | None = None
    source: str | None = None
    text: str = ""
    has_more: bool = False
    loading: bool = False
    error: str | None = None


def _matching(rows: tuple[AuditRow, ...], text: str) -> tuple[AuditRow, ...]:
    return matching(rows, text, attrgetter("haystack"))


class AuditViewModel(ViewModel[AuditState]):
    """Reads the audit log page by page; ``action``/``source`` filter on the server."""

    def __init__(
        self, client: Any, on_change: Listener | None = None, *, page_size: int = PAGE
    ) -> None:
        super().__init__(AuditState(), on_change)
        self.client = client
        self.page_size = page_size
        self._next_before: int | None = None
        #: while a screen shows the log, new entries are fetched as activity is announced
        self.live = False
        self._seen_values: dict[str, set[str]] = {"action": set(), "source": set()}

    async def _page(self, before: int, after: int = 0) -> tuple[list[AuditRow], int | None]:
        page = await self.client.query_audit(
            after=after,
            before=before,
            limit=self.page_size,
            action=self.state.action,
            source=self.state.source,
        )
        rows = [AuditRow.from_json(d) for d in page["items"]]
        for row in rows:
            self._seen_values["action"].add(row.action)
            self._seen_values["source"].add(row.source)
        return rows, page.get("next_before")

    def renamed(self) -> None:
        """Names were learned for ids the rows show: tell the screens to repaint them."""
        self._set()

    def suggest(self, field: str, prefix: str) -> list[str]:
        """Values seen for ``action`` or ``source`` that start with ``prefix`` (sorted)."""
        seen = self._seen_values.get(field, set())
        return sorted(v for v in seen if v and v.startswith(prefix.strip()))

    async def check_newer(self) -> None:
        """Put entries newer than the newest shown on top (errors go to ``state.error``)."""
        newest = self.state.rows[0].seq if self.state.rows else 0

        async def work() -> None:
            rows, _ = await self._page(0, after=newest)
            known = {r.seq for r in self.state.rows}
            fresh = tuple(r for r in rows if r.seq not in known)
            if fresh:
                self._show(fresh + self.state.rows, self._next_before)

        await self._load(work)

    def _show(self, rows: tuple[AuditRow, ...], next_before: int | None) -> None:
        self._next_before = next_before
        self._set(
            rows=rows,
            visible=_matching(rows, self.state.text),
            has_more=next_before is not None,
        )

    async def refresh(self) -> None:
        """Load the first page again (errors go to ``state.error``)."""

        async def work() -> None:
            rows, nxt = await self._page(0)
            self._show(tuple(rows), nxt)

        await self._load(work)

    async def load_more(self) -> None:
        """Append the next (older) page, if there is one (errors go to ``state.error``)."""
        before = self._next_before
        if before is None:
            return

        async def work() -> None:
            rows, nxt = await self._page(before)
            known = {r.seq for r in self.state.rows}
            self._show(self.state.rows + tuple(r for r in rows if r.seq not in known), nxt)

        await self._load(work)

    def set_text(self, text: str) -> None:
        """The local text filter over what is loaded (no reload): ``visible`` follows at once."""
        self._set(text=text, visible=_matching(self.state.rows, text))

    async def set_filter(
        self, action: str | None = None, source: str | None = None, text: str | None = None
    ) -> None:
        """Change filters: a new ``action``/``source`` reloads ('' clears), ``text`` is local.

        An argument left as None keeps that filter as it is.
        """
        server = {
            key: (value.strip() or None)
            for key, value in (("action", action), ("source", source))
            if value is not None
        }
        changed = any(getattr(self.state, k) != v for k, v in server.items())
        if text is not None:
            self.set_text(text)
        if changed:
            self._set(**server)
            await self.refresh()
