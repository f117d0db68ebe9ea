"""Form building blocks shared by the modal forms: a labelled row with its own error line."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Label, Static

from common.errors import KeyVaultError

FORM_CSS = """
.form-box {
    width: 96; max-width: 100%; height: auto; max-height: 100%; padding: 0 2 1 2;
    border: thick $primary; background: $surface;
}
.form-title { text-style: bold; margin: 1 0; }
.form-row { height: auto; }
.form-row > Label { width: 18; padding-top: 1; color: $text-muted; }
.form-row > .form-cell { width: 1fr; height: auto; }
.form-hint { color: $text-muted; padding-left: 1; }
.field-error { color: $error; padding-left: 1; display: none; }
.field-error.shown { display: block; }
.form-error { color: $error; margin-top: 1; display: none; }
.form-error.shown { display: block; }
.form-buttons { height: auto; align-horizontal: right; margin-top: 1; }
/* a modal form's buttons stay in view while its fields scroll (an 80×24 terminal) */
.form-box > .form-buttons { dock: bottom; }
.form-buttons Button { margin-left: 2; }
"""


def field_row(label: str, field: str, widget: Widget, hint: str = "") -> ComposeResult:
    """One labelled field: ``widget`` with an optional hint and an error line ``#<field>-error``."""
    with Horizontal(classes="form-row"):
        yield Label(label)
        with Vertical(classes="form-cell"):
            yield widget
            if hint:
                yield Static(hint, classes="form-hint")
            yield Static("", id=f"{field}-error", classes="field-error")


def clear_errors(screen: Widget) -> None:
    """Hide every field and form error."""
    for line in screen.query(".field-error, .form-error").results(Static):
        line.update("")
        line.remove_class("shown")


def show_error(screen: Widget, exc: KeyVaultError) -> str | None:
    """Put ``exc`` next to its field (``details["field"]``) or in ``#form-error``; returns the field."""
    clear_errors(screen)
    field = exc.details.get("field") if exc.details else None
    target = screen.query(f"#{field}-error") if isinstance(field, str) else None
    line = target.first(Static) if target else screen.query_one("#form-error", Static)
    line.update(exc.message)
    line.add_class("shown")
    return field if target else None


def show_errors(screen: Widget, errors: dict[str, str]) -> str | None:
    """Put each message next to its field (``""`` or an unknown field: ``#form-error``), all at
    once; returns the first field that has one, for focus."""
    clear_errors(screen)
    first: str | None = None
    general: list[str] = []
    for field, message in errors.items():
        target = screen.query(f"#{field}-error") if field else None
        if not target:
            general.append(message)
            continue
        line = target.first(Static)
        line.update(message)
        line.add_class("shown")
        first = first or field
    if general:
        line = screen.query_one("#form-error", Static)
        line.update("\n".join(general))
        line.add_class("shown")
    return first
