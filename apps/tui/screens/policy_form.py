"""The create/edit form of a rotation policy (a modal over ``PolicyDraft``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Select, Static

from apps.core.viewmodels.policies import PolicyDraft
from apps.tui.widgets.form import FORM_CSS, clear_errors, field_row, show_error
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.viewmodels.policies import PoliciesViewModel

ROTATORS = ("random", "postgres", "command")
TEXT_FIELDS = (
    ("name", "Name", "", "e.g. rotate database passwords"),
    ("name_glob", "Secret names", "glob on secret names, e.g. db/*", "db/*"),
    ("labels", "Labels", "k=v, k=v — every label must match", "env=prod"),
    ("interval_days", "Every (days)", "", "30"),
    ("notice_days", "Notice (days)", "warn this many days before rotation is due", "7"),
)
TAIL_FIELDS = (
    ("settings", "Settings", "rotator settings k=v, … (never secrets)", "length=32"),
    ("scope", "Vaults", '"all" or vault ids: vlt_a, vlt_b', "all"),
)


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
        title = "Edit policy" if self.policy_id else "New rotation policy"
        with VerticalScroll(classes="form-box"):
            yield Static(title, classes="form-title")
            for field, label, hint, placeholder in TEXT_FIELDS:
                box = Input(self._value(field), placeholder=placeholder, id=field)
                yield from field_row(label, field, box, hint)
            rotator = self._value("rotator") or "random"
            options = [(name, name) for name in ROTATORS]
            yield from field_row(
                "Rotator",
                "rotator",
                Select(options, value=rotator, allow_blank=False, id="rotator"),
            )
            for field, label, hint, placeholder in TAIL_FIELDS:
                box = Input(self._value(field), placeholder=placeholder, id=field)
                yield from field_row(label, field, box, hint)
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="form-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Save", id="save", variant="primary")

    def on_mount(self) -> None:
        """Start in the first field."""
        self.query_one("#name", Input).focus()

    def read_draft(self) -> PolicyDraft:
        """The form's current values as a draft (strings, as typed)."""
        values = {f: self.query_one(f"#{f}", Input).value for f, *_ in TEXT_FIELDS + TAIL_FIELDS}
        rotator = self.query_one("#rotator", Select).value
        return PolicyDraft(rotator=str(rotator), **values)

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
        field = show_error(self, exc)
        if field:
            self.query_one(f"#{field}").focus()

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Close without saving."""
        self.dismiss(False)
