"""What every screen of the TUI shares: the shell, the chrome, and one way to run an action.

A screen's data and commands live in an ``apps.core`` view model; the screen only lays out
widgets, subscribes to the view model's changes and runs its commands in Textual workers. An
action's :class:`KeyVaultError` becomes a notification — never a traceback on screen.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Static

from apps.core.rules import cert_left_text, cert_tone, due_tone
from apps.core.timefmt import CERT_WARN_HOURS, day
from apps.tui.widgets.tones import TONE_STYLE
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.shell import Shell

T = TypeVar("T")
log = logging.getLogger(__name__)


class KeyVaultScreen(Screen[Any]):
    """A top-level screen: header (with the offline banner), the body, the footer."""

    #: the title shown in the header and the command palette
    TITLE_TEXT = "KeyVault"

    _own_shell: Shell | None = None

    @property
    def shell(self) -> Shell:
        """The shell this screen was opened under (session, clients, view models, stream).

        Kept by the screen, so its clean-up after a logout (when the app has no shell any
        more) still reaches its own view models instead of None."""
        if self._own_shell is None:
            self._own_shell = self.app.shell  # type: ignore[attr-defined]
        return self._own_shell

    def now(self) -> datetime:
        """The app's clock (injectable for stable snapshots)."""
        clock = getattr(self.app, "now", None)
        return clock() if callable(clock) else datetime.now(UTC)

    def compose(self) -> ComposeResult:
        """Chrome around :meth:`compose_body`."""
        from textual.widgets import Footer

        from apps.tui.widgets.header import AppHeader

        yield AppHeader(self.TITLE_TEXT)
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        """The screen's own widgets (override)."""
        yield from ()

    def watch_model(
        self,
        subscribe: Callable[[Callable[[Any], None]], Callable[[], None]],
        on_state: Callable[[Any], None],
    ) -> None:
        """Repaint with ``on_state(state)`` on every change of a view model, while mounted.

        View-model listeners may be called from the app's event loop only (the core runs on
        it), so the state is handed straight to ``on_state``; the subscription ends on unmount.
        """
        unsubscribe = subscribe(on_state)
        self._unsubscribers = [*getattr(self, "_unsubscribers", []), unsubscribe]

    def on_unmount(self) -> None:
        """Drop view-model subscriptions."""
        for unsubscribe in getattr(self, "_unsubscribers", []):
            unsubscribe()
        self._unsubscribers = []

    def act(
        self,
        work: Callable[[], Awaitable[T]],
        *,
        done: str | Callable[[T], None] | None = None,
        group: str = "action",
    ) -> None:
        """Run an action in a worker; notify ``done`` (text or callback) or the error's message."""

        async def runner() -> None:
            try:
                result = await work()
            except KeyVaultError as exc:
                self.notify(exc.message, title="Failed", severity="error", timeout=8)
                return
            except Exception as exc:  # a bug: tell the person, keep the app running
                log.exception("unexpected error in %s", group)
                self.notify(
                    f"Unexpected error ({type(exc).__name__}); see the log for details.",
                    title="Failed",
                    severity="error",
                    timeout=8,
                )
                return
            if isinstance(done, str):
                self.notify(done)
            elif done is not None:
                done(result)

        self.run_worker(runner(), group=group, exit_on_error=False)

    def confirm(self, question: str, then: Callable[[], None], *, yes: str = "Yes") -> None:
        """Ask ``question`` in a modal; call ``then()`` only on yes."""

        def answered(answer: bool | None) -> None:
            if answer:
                then()

        self.app.push_screen(ConfirmScreen(question, yes), answered)


def due_text(moment: datetime | None, now: datetime, *, warn_days: int = 0) -> Text:
    """A date, red when past, yellow when within ``warn_days`` days."""
    if moment is None:
        return Text("—", style="dim")
    level = due_tone(moment, now, warn_days)
    return Text(day(moment), style=TONE_STYLE[level] if level else "")


def expires_text(
    moment: datetime | None, now: datetime, *, warn_hours: float = CERT_WARN_HOURS
) -> Text:
    """Time left as "in 23h" / "in 5d", yellow within ``warn_hours``, red "expired" when past.

    Vault certificates live a day by default and renew at two thirds of their life, so a
    date would always look close; the time left (and the colour) is what an operator needs.
    """
    level = cert_tone(moment, now, warn_hours)
    style = TONE_STYLE[level] if level else ("dim" if moment is None else "")
    return Text(cert_left_text(moment, now), style=style)


class ConfirmScreen(ModalScreen[bool]):
    """Ask a yes/no question; dismisses with True only for an explicit yes."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical {
        width: 64; height: auto; padding: 1 2; border: thick $warning; background: $surface;
    }
    ConfirmScreen #confirm-buttons { height: auto; align-horizontal: right; margin-top: 1; }
    ConfirmScreen Button { margin-left: 2; }
    """
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        """The question and two buttons."""
        with Vertical():
            yield Static(self.question)
            with Horizontal(id="confirm-buttons"):
                yield Button("Cancel (n)", id="no")
                yield Button(f"{self.yes} (y)", id="yes", variant="error")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """A button answers."""
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        """A key answers."""
        self.dismiss(answer)
