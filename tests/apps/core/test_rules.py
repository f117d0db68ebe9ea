"""The display rules both operator UIs draw: status word, tones, last seen, counts, cert time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apps.core.rules import (
    cert_left_text,
    cert_tone,
    count_text,
    last_seen_text,
    shown_status,
    status_counts,
    text_or_dash,
    tone,
)
from apps.core.viewmodels.vaults import VaultRow

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def vault(status: str = "online", revoked: bool = False) -> VaultRow:
    return VaultRow("vlt_1", "web-1", status, NOW, 3, "1.0", NOW, revoked)


def test_revoked_wins_over_the_reported_status() -> None:
    assert shown_status(vault("online", revoked=True)) == "revoked"
    assert shown_status(vault("offline", revoked=True)) == "revoked"
    assert shown_status(vault("pending")) == "pending"


def test_online_shows_live_and_anything_else_the_heartbeat_age() -> None:
    seen = NOW - timedelta(minutes=5)
    assert last_seen_text("online", seen, NOW) == "live"
    assert last_seen_text("offline", seen, NOW) == "5m ago"
    assert last_seen_text("revoked", None, NOW) == "never"


def test_counts_and_missing_values_show_a_dash() -> None:
    assert count_text(None) == "—" and count_text(0) == "0" and count_text(12) == "12"
    assert text_or_dash(None) == "—" and text_or_dash("") == "—" and text_or_dash("1.2") == "1.2"


def test_certificate_time_left_and_its_tone() -> None:
    assert cert_left_text(None, NOW) == "—" and cert_tone(None, NOW) is None
    assert cert_left_text(NOW - timedelta(seconds=1), NOW) == "expired"
    assert cert_tone(NOW - timedelta(seconds=1), NOW) == "critical"
    assert cert_left_text(NOW + timedelta(hours=2), NOW) == "in 2h"
    assert cert_tone(NOW + timedelta(hours=2), NOW) == "warning"
    assert cert_tone(NOW + timedelta(hours=20), NOW) is None
    assert cert_tone(NOW + timedelta(hours=20), NOW, warn_hours=24) == "warning"


def test_status_words_and_severities_map_to_semantic_tones() -> None:
    assert [tone(s) for s in ("online", "offline", "pending", "revoked")] == [
        "ok",
        "critical",
        "warning",
        "muted",
    ]
    assert [tone(s) for s in ("critical", "warning", "info")] == ["critical", "warning", "info"]
    assert tone("ok") == "ok" and tone("muted") == "muted"
    assert tone("bogus") is None and tone("") is None


def test_status_counts_count_the_shown_word() -> None:
    rows = [vault("online"), vault("online", revoked=True), vault("offline"), vault("online")]
    assert status_counts(rows) == [("offline", 1), ("online", 2), ("revoked", 1)]
    assert status_counts([]) == []


def test_a_due_date_is_critical_once_past_and_a_warning_when_close() -> None:
    from apps.core.rules import due_tone

    assert due_tone(None, NOW) is None
    assert due_tone(NOW - timedelta(seconds=1), NOW) == "critical"
    assert due_tone(NOW + timedelta(days=1), NOW) is None
    assert due_tone(NOW + timedelta(days=1), NOW, warn_days=2) == "warning"
    assert due_tone(NOW + timedelta(days=3), NOW, warn_days=2) is None


def test_the_alert_count_gives_open_and_unread_together() -> None:
    from apps.core.rules import alerts_text

    assert alerts_text(0, 0) == "no open alerts"
    assert alerts_text(1, 0) == "1 open alert · 0 unread"  # seen, but still open: still counted
    assert alerts_text(1, 1) == "1 open alert · 1 unread"
    assert alerts_text(12, 3) == "12 open alerts · 3 unread"
    assert alerts_text(2, 5) == "2 open alerts · 2 unread"  # never more unread than open
    assert alerts_text(3, 2, short=True) == "3 open · 2 unread"  # the 80-column header
    assert alerts_text(0, 0, short=True) == "no open alerts"
