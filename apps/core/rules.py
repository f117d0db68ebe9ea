"""Row status and display rules both operator UIs draw: one place, no UI toolkit.

A UI asks this module *what* a row says (the status word, "live", "—", "in 5h") and *how urgent*
it is as a semantic tone (``ok``, ``info``, ``warning``, ``critical``, ``muted``); each UI maps a
tone to its own toolkit colour or style, and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal, Protocol

from apps.core.timefmt import CERT_WARN_HOURS, ago, time_left, urgency

Tone = Literal["ok", "info", "warning", "critical", "muted"]
TONES: tuple[Tone, ...] = ("ok", "info", "warning", "critical", "muted")
DASH = "—"
LIVE = "live"

#: the tone of each vault status word
STATUS_TONES: dict[str, Tone] = {
    "online": "ok",
    "offline": "critical",
    "pending": "warning",
    "revoked": "muted",
}
#: the tone of each alert severity
SEVERITY_TONES: dict[str, Tone] = {"critical": "critical", "warning": "warning", "info": "info"}
_TONE_OF_ITSELF: dict[str, Tone] = {t: t for t in TONES}


class HasStatus(Protocol):
    """A row with a vault status and a revoked flag (a vault row, a vault detail)."""

    @property
    def status(self) -> str:
        """The status the control plane reports."""

    @property
    def revoked(self) -> bool:
        """True once the vault was revoked."""


def shown_status(row: HasStatus) -> str:
    """The status word a person sees: revoked wins over whatever the agent last reported."""
    return "revoked" if row.revoked else row.status


def tone(word: str) -> Tone | None:
    """The tone of a status word, an alert severity or a tone itself; None for other words."""
    if word in STATUS_TONES:
        return STATUS_TONES[word]
    if word in SEVERITY_TONES:
        return SEVERITY_TONES[word]
    return _TONE_OF_ITSELF.get(word)


def last_seen_text(status: str, last_seen: datetime | None, now: datetime) -> str:
    """ "live" for an online vault, else how long ago its last heartbeat came.

    Heartbeats are not pushed to operators (thousands a minute); "online" already means one
    arrived within the offline limit, so its age is only worth showing once it stops.
    """
    return LIVE if status == "online" else ago(last_seen, now)


def count_text(count: int | None) -> str:
    """A count as text, "—" when it is not known."""
    return DASH if count is None else str(count)


def text_or_dash(value: str | None) -> str:
    """A value as given, "—" when missing or empty."""
    return value or DASH


def cert_left_text(expiry: datetime | None, now: datetime) -> str:
    """A certificate's time left: "in 23h", "expired", "—"."""
    return time_left(expiry, now)


def cert_tone(
    expiry: datetime | None, now: datetime, warn_hours: float = CERT_WARN_HOURS
) -> Tone | None:
    """``critical`` once a certificate expired, ``warning`` within ``warn_hours``, else None."""
    level = urgency(expiry, now, warn_hours * 3600)
    return tone(level) if level else None


def due_tone(moment: datetime | None, now: datetime, warn_days: float = 0) -> Tone | None:
    """``critical`` once a due date (a rotation's) has passed, ``warning`` within
    ``warn_days`` days, else None."""
    if moment is None:
        return None
    left = (moment - now).total_seconds()
    if left < 0:
        return "critical"
    return "warning" if left < warn_days * 86400 else None


def alerts_text(open_count: int, unread: int, short: bool = False) -> str:
    """The header's alert count: the open alerts (those Home and the Alerts list show, i.e. not
    resolved) and how many of them are unread, in one phrase so the two never disagree:
    "no open alerts", "1 open alert · 0 unread", "3 open alerts · 2 unread"; ``short`` (an
    80-column header) drops the word "alert": "3 open · 2 unread"."""
    if open_count <= 0:
        return "no open alerts"
    unread = max(0, min(unread, open_count))
    noun = "" if short else f" alert{'' if open_count == 1 else 's'}"
    return f"{open_count} open{noun} · {unread} unread"


def status_counts(rows: Iterable[HasStatus]) -> list[tuple[str, int]]:
    """How many rows show each status word, sorted by the word."""
    counts: dict[str, int] = {}
    for row in rows:
        status = shown_status(row)
        counts[status] = counts.get(status, 0) + 1
    return sorted(counts.items())


#: distinct colours for chart series (readable on light and dark backgrounds), in order
SERIES_COLOURS: tuple[str, ...] = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)


def series_colour(index: int) -> str:
    """The colour of the ``index``-th series of a chart (distinct for the first ten)."""
    return SERIES_COLOURS[index % len(SERIES_COLOURS)]
