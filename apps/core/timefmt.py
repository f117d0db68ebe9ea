"""Times as operators read them, shared by the TUI and the desktop app (no UI toolkit here)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

#: vault certificates live a day and renew at two thirds of their life; the control plane
#: raises certificate_expiring this long before the end by default
CERT_WARN_HOURS = 6.0
_UNITS = ((86400, "d"), (3600, "h"), (60, "m"))
#: an ISO 8601 time inside server text ("2026-01-15T12:00:00.123456Z", "…+00:00")
_ISO_IN_TEXT = re.compile(
    r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"
)


def _short(seconds: int) -> str:
    for size, unit in _UNITS:
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def ago(moment: datetime | None, now: datetime) -> str:
    """A short relative time: "12s ago", "5m ago", "3h ago", "2d ago" ("never" for None)."""
    if moment is None:
        return "never"
    seconds = int((now - moment).total_seconds())
    return "just now" if seconds < 0 else f"{_short(seconds)} ago"


def day(moment: datetime | None) -> str:
    """A date as YYYY-MM-DD ("—" for None)."""
    return moment.strftime("%Y-%m-%d") if moment is not None else "—"


def time_left(moment: datetime | None, now: datetime) -> str:
    """Time until ``moment``: "in 23h", "in 5d", "expired" ("—" for None)."""
    if moment is None:
        return "—"
    left = int((moment - now).total_seconds())
    return "expired" if left <= 0 else f"in {_short(left)}"


def urgency(moment: datetime | None, now: datetime, warn_seconds: float) -> str | None:
    """ "critical" once past, "warning" within ``warn_seconds``, else None."""
    if moment is None:
        return None
    left = (moment - now).total_seconds()
    if left <= 0:
        return "critical"
    return "warning" if left < warn_seconds else None


def stamp(moment: datetime) -> str:
    """A moment as operators read it: "2026-01-15 12:00 UTC" (naive times are taken as UTC)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def readable_times(text: str, now: datetime | None = None) -> str:
    """``text`` (an alert message from the server) with every ISO 8601 time made readable:
    "2026-01-15 12:00 UTC", with "(5m ago)" after it when ``now`` is given. Text that only
    looks like a time is left as it was."""

    def one(match: re.Match[str]) -> str:
        try:
            moment = datetime.fromisoformat(match.group(0).replace("Z", "+00:00"))
        except ValueError:
            return match.group(0)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return stamp(moment) + (f" ({ago(moment, now)})" if now is not None else "")

    return _ISO_IN_TEXT.sub(one, text)
