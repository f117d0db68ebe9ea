"""The create/edit form of a secret on an agent (a modal); the value is a password field."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static, Switch

from apps.tui.widgets.form import FORM_CSS, clear_errors, field_row, show_error
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel, SecretRow


def labels_text(labels: Any) -> str:
    """Labels (pairs, a dict or text) as ``k=v, k=v``."""
    if isinstance(labels, str):
        return labels
    items = labels.items() if isinstance(labels, dict) else (labels or ())
    return ", ".join(f"{k}={v}" for k, v in items)


class SecretFormScreen(ModalScreen[bool]):
    """Create a secret (``row`` None) or write a new version of one; dismisses True once saved."""

    DEFAULT_CSS = (
        FORM_CSS
        + """
    SecretFormScreen { align: center middle; }
    SecretFormScreen #show-row { height: auto; }
    SecretFormScreen #show-row > .switch-gap { width: 18; padding: 0; }
    SecretFormScreen #show-row Static { padding: 1 0 0 1; color: $text-muted; width: auto; }
    """
    )
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+t", "toggle_value", "Show/hide the value"),
    ]

    def __init__(self, model: AgentSecretsViewModel, row: SecretRow | None = None) -> None:
        super().__init__()
        self.model = model
        self.row = row

    def compose(self) -> ComposeResult:
        """Name, value (+ show toggle), labels, description, errors, buttons."""
        row = self.row
        with VerticalScroll(classes="form-box"):
            yield Static(f"Edit {row.name}" if row else "New secret", classes="form-title")
            name = Input(row.name if row else "", placeholder="db/password", id="name")
            name.disabled = row is not None
            yield from field_row("Name", "name", name)
            value_hint = (
                "a new value makes a new version; empty keeps the current one" if row else ""
            )
            value = Input(placeholder="the secret value", password=True, id="value")
            yield from field_row("Value", "value", value, value_hint)
            with Horizontal(id="show-row", classes="form-row"):
                yield Static("", classes="switch-gap")
                yield Switch(False, id="show-value")
                yield Static("show the value (ctrl+t)")
            labels = labels_text(row.labels) if row else ""
            yield from field_row(
                "Labels", "labels", Input(labels, placeholder="env=prod, team=db", id="labels")
            )
            yield from field_row(
                "Description",
                "description",
                Input(
                    row.description if row else "",
                    placeholder="optional",
                    id="description",
                ),
            )
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="form-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save", id="save", variant="primary")

    def on_mount(self) -> None:
        """Start in the first editable field."""
        self.query_one("#value" if self.row is not None else "#name", Input).focus()

    @on(Switch.Changed, "#show-value")
    def _show(self, event: Switch.Changed) -> None:
        self.query_one("#value", Input).password = not event.value

    def action_toggle_value(self) -> None:
        """Show or mask the value being typed."""
        switch = self.query_one("#show-value", Switch)
        switch.value = not switch.value

    @on(Button.Pressed, "#save")
    @on(Input.Submitted)
    def action_save(self) -> None:
        """Send the form; field-tagged errors appear next to their field."""
        values = {f: self.query_one(f"#{f}", Input).value for f in ("name", "value", "labels")}
        values["description"] = self.query_one("#description", Input).value
        clear_errors(self)
        self.run_worker(self._save(values), group="save", exclusive=True)

    async def _save(self, values: dict[str, str]) -> None:
        try:
            if self.row is None:
                saved = await self.model.create(
                    values["name"], values["value"], values["labels"], values["description"]
                )
            else:
                saved = await self.model.update(
                    self.row.name, values["value"], values["labels"], values["description"]
                )
        except KeyVaultError as exc:
            field = show_error(self, exc)
            if field:
                self.query_one(f"#{field}").focus()
            return
        self.app.notify(f"saved {saved.name} (version {saved.version})")
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Close without saving."""
        self.dismiss(False)
