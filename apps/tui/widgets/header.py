"""The header every screen shows: who is logged in where, live state, open and unread alerts, offline banner."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from apps.core.navigation import AREAS, area_of
from apps.core.rules import alerts_text

#: mode name → (module under apps.tui.screens, screen class, title, key): the core's areas
FLEET_MODES: dict[str, tuple[str, str, str, str]] = {
    a.key: (a.page, f"{a.stem}Screen", a.title, a.letter) for a in AREAS
}
#: screens reached from a mode's screen → the core's sub-area they are
SUB_SCREENS = {"VaultDetailScreen": "vault_detail", "SecretsScreen": "agent_secrets"}


def mode_of(screen_class: str) -> str | None:
    """The fleet mode a screen class belongs to (for the navigation line)."""
    for mode, (_, name, _, _) in FLEET_MODES.items():
        if name == screen_class:
            return mode
    found = area_of(SUB_SCREENS.get(screen_class, ""))
    return found.key if found else None


COMPACT_BELOW = 120  # columns: under this the header drops what the footer also says


def key_style(app: Any) -> str:
    """The style of a key letter and of a warning word in the header: yellow on the dark
    theme; on a light one the theme's ``text-warning`` (a darker amber that reads on grey)."""
    theme = getattr(app, "current_theme", None)
    if theme is None or theme.dark:
        return "bold yellow"
    return f"bold {app.get_css_variables().get('text-warning', 'dark_orange3')}"


def nav_text(
    current: str | None,
    compact: bool = False,
    width: int | None = None,
    keys: str = "bold yellow",
) -> Text:
    """The navigation line: every mode with its key, the current one highlighted; compact
    (a narrow terminal, 80 columns) uses one-word titles and leaves help/quit to the footer,
    spaced tighter when that is what makes every area fit in ``width`` columns. A key and its
    title never part (a non-breaking space): narrower still, the line wraps between areas."""
    if not compact:
        text = Text(" ")
        for mode, (_, _, title, key) in FLEET_MODES.items():
            style = "bold reverse" if mode == current else ""
            text.append(f" {key} ", style=style or keys)
            text.append(f"{title} ", style=style)
            text.append(" ")
        text.append("  ? help  ^p palette  q quit", style="dim")
        return text
    for gap in (" ", ""):
        text = _compact_nav(current, gap, keys)
        if width is None or text.cell_len <= width:
            break
    return text


def _compact_nav(current: str | None, gap: str, keys: str) -> Text:
    """One-word titles, each entry `` key title`` followed by ``gap``."""
    text = Text()
    for mode, (_, _, title, key) in FLEET_MODES.items():
        style = "bold reverse" if mode == current else ""
        shown = title.split()[0].replace("Enrollment", "Enroll")
        text.append(" ")
        text.append(key, style=style or keys)
        text.append(f"\xa0{shown}{gap}", style=style)
    return text


def status_text(app: Any, compact: bool = False, email: bool = True) -> Text:
    """The right-hand side of the header for the app's current shell (or none yet); compact
    leaves out the e-mail and puts the live state and alert counts first so they always show
    (``email=False``: the full header without the e-mail, for a long screen title)."""
    shell = getattr(app, "shell", None)
    text = Text()
    if getattr(app, "memory_keyring", False):
        text.append(
            "memory keyring" if compact else "credentials in memory only", style=key_style(app)
        )
        text.append("  ")
    if shell is None:
        text.append("not logged in", style="dim")
        return text
    profile = shell.session.profile
    who = Text()
    who.append(profile.org_name or profile.org_id or "?", style="bold")
    if not compact and email:
        who.append(f" · {profile.email}")
    if profile.role:
        who.append(f" ({profile.role})", style="dim")
    facts = Text()
    if shell.online:
        facts.append("● live", style="bold green")
    else:
        facts.append("● offline", style="bold red")
    state = shell.alerts.state
    style = "bold red" if state.unread else "bold yellow" if state.open else "dim"
    facts.append(f"  {alerts_text(state.open, state.unread, compact)}", style=style)
    # at 80 columns a long screen title cuts the end: let that be the org, never the counts
    text.append_text(Text("  ").join([facts, who] if compact else [who, facts]))
    return text


def banner_text(app: Any) -> str | None:
    """The offline banner's text, or None while the live stream is connected (or no shell)."""
    shell = getattr(app, "shell", None)
    if shell is None or shell.online:
        return None
    url = shell.session.profile.control_plane_url
    return f"Live updates paused — reconnecting to {url}…"


class AppHeader(Vertical):
    """Title, org/user/role, live dot and unread count; the offline banner below while offline."""

    DEFAULT_CSS = """
    AppHeader { dock: top; height: auto; }
    AppHeader #header-line { height: 1; background: $panel; }
    AppHeader #header-title { width: auto; padding: 0 1; text-style: bold; color: $accent; }
    AppHeader #header-status {
        width: 1fr; content-align: right middle; padding: 0 1;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    AppHeader #header-nav { height: auto; background: $panel-darken-1; }
    AppHeader #offline-banner {
        height: 1; width: 100%; background: $error; color: $text; text-style: bold;
        content-align: center middle;
    }
    """

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title_text = title

    def compose(self) -> ComposeResult:
        """One line of facts, then the (hidden unless offline) banner."""
        with Horizontal(id="header-line"):
            yield Static(f"KeyVault · {self.title_text}", id="header-title")
            yield Static(id="header-status")
        yield Static(id="header-nav")
        yield Static(id="offline-banner")

    def on_mount(self) -> None:
        """Paint now and on every change of the app's live state."""
        signal = getattr(self.app, "status_signal", None)
        if signal is not None:
            signal.subscribe(self, lambda _: self.refresh_status())
        self.watch(self.app, "theme", lambda _: self.refresh_status(), init=False)
        self.refresh_status()

    def on_resize(self) -> None:
        """A narrower or wider terminal: repaint compact or in full."""
        self.refresh_status()

    def refresh_status(self) -> None:
        """Repaint from the app's shell: status line and offline banner."""
        width = self.app.size.width
        compact = width < COMPACT_BELOW
        title_text = self.title_text if compact else f"KeyVault · {self.title_text}"
        status = status_text(self.app, compact)
        if not compact and cell_len(title_text) + status.cell_len + 4 > width:
            # a long screen title: drop the brand and the e-mail before cutting any count
            title_text, status = self.title_text, status_text(self.app, email=False)
            if cell_len(title_text) + status.cell_len + 4 > width:
                status = status_text(self.app, compact=True)
        self.query_one("#header-title", Static).update(title_text)
        self.query_one("#header-status", Static).update(status)
        nav = self.query_one("#header-nav", Static)
        nav.display = getattr(self.app, "shell", None) is not None
        current = mode_of(type(self.screen).__name__)
        nav.update(nav_text(current, compact, self.app.size.width, key_style(self.app)))
        banner = self.query_one("#offline-banner", Static)
        message = banner_text(self.app)
        banner.display = message is not None
        banner.update(message or "")
