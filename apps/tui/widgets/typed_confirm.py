"""A confirmation for irreversible actions: the operator types the object's name first."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class TypedConfirmScreen(ModalScreen[bool]):
    """Dismisses with True only once ``expected`` was typed exactly; Esc or Cancel: False."""

    DEFAULT_CSS = """
    TypedConfirmScreen { align: center middle; }
    TypedConfirmScreen > #typed-box {
        width: 64; height: auto; padding: 1 2; border: thick $error; background: $surface;
    }
    TypedConfirmScreen #typed-question { margin-bottom: 1; }
    TypedConfirmScreen #typed-buttons { height: auto; align-horizontal: right; margin-top: 1; }
    TypedConfirmScreen Button { margin-left: 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, expected: str, *, action: str = "Confirm") -> None:
        super().__init__()
        self.question, self.expected, self.action_label = question, expected, action

    def compose(self) -> ComposeResult:
        """The question, the field to type into, the buttons."""
        with Vertical(id="typed-box"):
            yield Static(
                f"{self.question}\nThis cannot be undone. Type {self.expected!r} to confirm.",
                id="typed-question",
            )
            yield Input(placeholder=self.expected, id="typed")
            with Horizontal(id="typed-buttons"):
                yield Button("Cancel", id="no")
                yield Button(self.action_label, id="yes", variant="error", disabled=True)

    def on_mount(self) -> None:
        """Typing starts in the field."""
        self.query_one("#typed", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        """The action button works only for the exact name."""
        self.query_one("#yes", Button).disabled = event.value.strip() != self.expected

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter confirms when the name matches."""
        if event.value.strip() == self.expected:
            self.dismiss(True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Confirm (enabled only when matched) or cancel."""
        self.dismiss(event.button.id == "yes")

    def action_cancel(self) -> None:
        """Esc: nothing happens."""
        self.dismiss(False)
