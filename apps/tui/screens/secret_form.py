"""The create/edit form of a secret on an agent (a modal); the value is a password field."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static, Switch

from apps.core.forms import SECRET_FORM, labels_text
from apps.tui.widgets.form import FORM_CSS, clear_errors, field_row, show_error
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel, SecretRow


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
        editing = row is not None
        with VerticalScroll(classes="form-box"):
            title = SECRET_FORM.title(editing, name=row.name if row else "")
            yield Static(title, classes="form-title")
            for spec in SECRET_FORM.fields:
                box = Input(
                    self._initial(spec.name),
                    placeholder=spec.placeholder,
                    password=spec.kind == "secret",
                    id=spec.name,
                )
                box.disabled = editing and spec.fixed_on_edit
                yield from field_row(spec.label, spec.name, box, spec.help_for(editing))
                if spec.kind == "secret":
                    with Horizontal(id="show-row", classes="form-row"):
                        yield Static("", classes="switch-gap")
                        yield Switch(False, id="show-value")
                        yield Static("show the value (ctrl+t)")
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="form-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save", id="save", variant="primary")

    def _initial(self, field: str) -> str:
        """A field's value when the form opens: the row's (never its secret value), or ""."""
        row = self.row
        if row is None or field == "value":
            return ""
        if field == "labels":
            return labels_text(row.labels)
        return str(getattr(row, field, "") or "")

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
        values = {f: self.query_one(f"#{f}", Input).value for f in SECRET_FORM.names}
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
