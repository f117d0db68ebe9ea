"""A small modal asking which organisation to sign in to with single sign-on."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label


class SsoPromptScreen(ModalScreen[str | None]):
    """Dismisses with the organisation id typed (None when cancelled)."""

    DEFAULT_CSS = """
    SsoPromptScreen { align: center middle; }
    SsoPromptScreen > Vertical {
        width: 64; height: auto; padding: 1 2; border: thick $accent; background: $surface;
    }
    SsoPromptScreen Label { margin-bottom: 1; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, org_id: str = "") -> None:
        super().__init__()
        self.org_id = org_id

    def compose(self) -> ComposeResult:
        """The question and one field."""
        with Vertical():
            yield Label("Sign in with your organisation's identity provider (a browser opens).")
            yield Input(value=self.org_id, placeholder="organisation id, org_…", id="sso-org")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter answers."""
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        """Escape cancels."""
        self.dismiss(None)
