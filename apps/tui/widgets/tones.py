"""The TUI's styles for the core's semantic tones (``apps.core.rules``): the only colour table."""

from __future__ import annotations

from apps.core.rules import Tone, tone

#: how each tone is drawn in the terminal
TONE_STYLE: dict[Tone, str] = {
    "ok": "bold green",
    "info": "blue",
    "warning": "yellow",
    "critical": "bold red",
    "muted": "dim strike",
}
#: "live" (an online vault's last seen) is calmer than the status word beside it
LIVE_STYLE = "green"


def style_of(word: str) -> str:
    """The Rich style of a status word, severity or tone ("" for any other word)."""
    found = tone(word)
    return TONE_STYLE[found] if found else ""
