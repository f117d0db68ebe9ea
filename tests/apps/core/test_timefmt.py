"""Times inside server text, made readable for both apps."""

from __future__ import annotations

from datetime import UTC, datetime

from apps.core.timefmt import readable_times, stamp

NOW = datetime(2026, 1, 15, 12, 5, tzinfo=UTC)


def test_iso_times_in_text_become_readable() -> None:
    text = "vault web-1 disconnected; last heartbeat 2026-01-15T12:00:42.123456Z"
    assert readable_times(text) == "vault web-1 disconnected; last heartbeat 2026-01-15 12:00 UTC"
    assert readable_times(text, NOW).endswith("2026-01-15 12:00 UTC (4m ago)")


def test_offsets_are_turned_into_utc_and_non_times_are_kept() -> None:
    assert readable_times("at 2026-01-15T13:00:00+01:00") == "at 2026-01-15 12:00 UTC"
    assert readable_times("bad 2026-13-45T99:99Z, fine") == "bad 2026-13-45T99:99Z, fine"
    assert readable_times("no time here") == "no time here"
    assert stamp(datetime(2026, 1, 15, 12, 0)) == "2026-01-15 12:00 UTC"  # naive is UTC
