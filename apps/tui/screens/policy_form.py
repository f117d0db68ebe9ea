"""The create/edit form of a rotation policy (a modal over ``PolicyDraft``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Select, Static

from apps.core.forms import POLICY_FORM, FieldSpec
from apps.core.viewmodels.policies import PolicyDraft, form_errors
from apps.tui.widgets.form import FORM_CSS, clear_errors, field_row, show_errors
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.viewmodels.policies import PoliciesViewModel


class PolicyFormScreen(ModalScreen[bool]):
    """Create (``policy_id`` None) or edit a policy; dismisses True once saved."""

    DEFAULT_CSS = (
        FORM_CSS
        + """
    PolicyFormScreen { align: center middle; }
    PolicyFormScreen Select { width: 1fr; }
    """
    )
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(
        self,
        model: PoliciesViewModel,
        policy_id: str | None = None,
        draft: PolicyDraft | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.policy_id = policy_id
        self.draft = draft

    def _value(self, field: str) -> str:
        return str(getattr(self.draft, field, "") or "") if self.draft else ""

    def compose(self) -> ComposeResult:
        """Title, the fields, the rotator select, errors, buttons."""
        editing = bool(self.policy_id)
        with VerticalScroll(classes="form-box"):
            yield Static(POLICY_FORM.title(editing), classes="form-title")
            for spec in POLICY_FORM.fields:
                yield from field_row(spec.label, spec.name, self._box(spec), spec.help_for(editing))
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="form-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save", id="save", variant="primary")

    def on_mount(self) -> None:
        """Start in the first field."""
        self.query_one("#name", Input).focus()

    def _box(self, spec: FieldSpec) -> Input | Select[str]:
        """The widget of one field: a choice list or a text box, filled from the draft."""
        value = self._value(spec.name)
        if spec.kind == "choice":
            options = [(name, name) for name in spec.choices]
            chosen = value if value in spec.choices else spec.default
            return Select(options, value=chosen, allow_blank=False, id=spec.name)
        return Input(value, placeholder=spec.placeholder, id=spec.name)

    def read_draft(self) -> PolicyDraft:
        """The form's current values as a draft (strings, as typed)."""
        values: dict[str, str] = {}
        for spec in POLICY_FORM.fields:
            widget = self.query_one(f"#{spec.name}")
            value = widget.value if isinstance(widget, Input | Select) else ""
            values[spec.name] = str(value)
        return PolicyDraft(**values)

    @on(Button.Pressed, "#save")
    @on(Input.Submitted)
    def action_save(self) -> None:
        """Validate locally (errors next to fields), then create or update on the server."""
        draft = self.read_draft()
        try:
            draft.validate()
        except KeyVaultError as exc:
            self._fail(exc)
            return
        clear_errors(self)
        self.run_worker(self._save(draft), group="save", exclusive=True)

    async def _save(self, draft: PolicyDraft) -> None:
        try:
            if self.policy_id:
                await self.model.update(self.policy_id, draft)
            else:
                await self.model.create(draft)
        except KeyVaultError as exc:
            self._fail(exc)
            return
        self.app.notify(f"policy {draft.name.strip()!r} saved")
        self.dismiss(True)

    def _fail(self, exc: KeyVaultError) -> None:
        field = show_errors(self, form_errors(exc))  # every problem at once, each at its field
        if field:
            self.query_one(f"#{field}").focus()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Close without saving."""
        self.dismiss(False)
