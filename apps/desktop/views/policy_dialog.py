"""The create/edit dialog of a rotation policy, over ``PolicyDraft``; errors next to fields."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from apps.core.forms import POLICY_FORM, FieldSpec
from apps.core.viewmodels.policies import PolicyDraft, form_errors
from apps.desktop.tasks import run_task
from apps.desktop.views.ops_kit import FieldErrors
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.viewmodels.policies import PoliciesViewModel, PolicyRow


class PolicyDialog(QDialog):
    """Create (``policy_id`` None) or edit a policy; stays open until saved or cancelled."""

    saved = Signal(object)  # the PolicyRow

    def __init__(
        self,
        model: PoliciesViewModel,
        policy_id: str | None = None,
        draft: PolicyDraft | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.model = model
        self.policy_id = policy_id
        self.setWindowTitle(POLICY_FORM.title(bool(policy_id)))
        self.setMinimumWidth(520)
        self.errors = FieldErrors(list(POLICY_FORM.names))
        self.inputs: dict[str, QLineEdit] = {}
        self.rotator = QComboBox()
        form = QFormLayout()
        form.setVerticalSpacing(4)
        for spec in POLICY_FORM.fields:
            if spec.kind == "choice":
                self.rotator.addItems(list(spec.choices))
                self._row(form, spec.name, spec.label, self.rotator, spec.help)
            else:
                self._add(form, spec)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        title = QLabel(self.windowTitle())
        title.setObjectName("title")
        layout.addWidget(title)
        layout.addLayout(form)
        layout.addWidget(self.errors.form)
        layout.addWidget(self.buttons)
        self.fill(draft or PolicyDraft())

    def _add(self, form: QFormLayout, spec: FieldSpec) -> None:
        box = QLineEdit()
        box.setObjectName(spec.name)
        box.setPlaceholderText(spec.placeholder)
        box.returnPressed.connect(self.save)
        self.inputs[spec.name] = box
        self._row(form, spec.name, spec.label, box, spec.help)

    def _row(self, form: QFormLayout, field: str, label: str, box: QWidget, hint: str) -> None:
        """A field with its hint under it and its error label under that."""
        column = QVBoxLayout()
        column.setSpacing(2)
        column.addWidget(box)
        if hint:
            note = QLabel(hint)
            note.setObjectName("muted")
            column.addWidget(note)
        column.addWidget(self.errors.labels[field])
        form.addRow(label, column)

    def fill(self, draft: PolicyDraft) -> None:
        """Put a draft's values into the fields."""
        for field, box in self.inputs.items():
            box.setText(str(getattr(draft, field)))
        rotator = POLICY_FORM.field("rotator")
        self.rotator.setCurrentText(
            draft.rotator if draft.rotator in rotator.choices else rotator.default
        )

    def set_values(self, **values: str) -> None:
        """Type values into fields by name (``rotator`` picks the rotator)."""
        for field, value in values.items():
            if field == "rotator":
                self.rotator.setCurrentText(value)
            else:
                self.inputs[field].setText(value)

    def draft(self) -> PolicyDraft:
        """The fields as a draft, as typed."""
        values: dict[str, Any] = {f: box.text() for f, box in self.inputs.items()}
        return PolicyDraft(rotator=self.rotator.currentText(), **values)

    def save(self) -> None:
        """Check locally (errors next to fields), then create or update on the server."""
        draft = self.draft()
        try:
            draft.validate()
        except KeyVaultError as exc:
            self._failed(exc)
            return
        self.errors.clear()
        self._busy(True)
        if self.policy_id:
            coro = self.model.update(self.policy_id, draft)
        else:
            coro = self.model.create(draft)
        run_task(self, coro, done=self._saved, failed=self._failed)

    def _busy(self, busy: bool) -> None:
        button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        button.setEnabled(not busy)
        button.setText("Saving…" if busy else "Save")

    def _saved(self, row: PolicyRow) -> None:
        self._busy(False)
        self.saved.emit(row)
        self.accept()

    def _failed(self, error: KeyVaultError) -> None:
        """Show a local or server error next to its field, or under the form."""
        self._busy(False)
        field = self.errors.show_all(form_errors(error))  # every problem, each at its field
        if field in self.inputs:
            self.inputs[field].setFocus()
        elif field == "rotator":
            self.rotator.setFocus()
