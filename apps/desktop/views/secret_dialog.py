"""The create/edit dialog of a secret on an agent; the value is a password field."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from apps.core.forms import SECRET_FORM, labels_text
from apps.desktop.tasks import run_task
from apps.desktop.views.ops_kit import FieldErrors
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel, SecretRow


class SecretDialog(QDialog):
    """Create a secret (``row`` None) or write a new version of one; open until saved."""

    saved = Signal(object)  # the SecretRow

    def __init__(
        self,
        model: AgentSecretsViewModel,
        row: SecretRow | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.model = model
        self.row = row
        editing = row is not None
        self.setWindowTitle(SECRET_FORM.title(editing, name=row.name if row else ""))
        self.setMinimumWidth(500)
        self.errors = FieldErrors(list(SECRET_FORM.names))
        self.inputs = {f: QLineEdit() for f in SECRET_FORM.names}
        for spec in SECRET_FORM.fields:
            box = self.inputs[spec.name]
            box.setObjectName(spec.name)
            box.returnPressed.connect(self.save)
            box.setPlaceholderText(spec.placeholder)
            if spec.kind == "secret":
                box.setEchoMode(QLineEdit.EchoMode.Password)
        self.show_value = QCheckBox("Show the value")
        self.show_value.toggled.connect(self._show_value)
        if row is not None:
            self.inputs["name"].setText(row.name)
            self.inputs["name"].setEnabled(False)
            self.inputs["labels"].setText(labels_text(row.labels))
            self.inputs["description"].setText(row.description)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        self._layout()
        self.inputs["value" if row else "name"].setFocus()

    def _layout(self) -> None:
        editing = self.row is not None
        form = QFormLayout()
        for spec in SECRET_FORM.fields:
            column = QVBoxLayout()
            column.setSpacing(2)
            column.addWidget(self.inputs[spec.name])
            if spec.kind == "secret":
                column.addWidget(self.show_value)
            hint = spec.help_for(editing)
            if hint:
                note = QLabel(hint)
                note.setObjectName("muted")
                column.addWidget(note)
            column.addWidget(self.errors.labels[spec.name])
            form.addRow(spec.label, column)
        layout = QVBoxLayout(self)
        title = QLabel(self.windowTitle())
        title.setObjectName("title")
        layout.addWidget(title)
        layout.addLayout(form)
        layout.addWidget(self.errors.form)
        layout.addWidget(self.buttons)

    def _show_value(self, shown: bool) -> None:
        mode = QLineEdit.EchoMode.Normal if shown else QLineEdit.EchoMode.Password
        self.inputs["value"].setEchoMode(mode)

    def set_values(self, **values: str) -> None:
        """Type values into fields by name."""
        for field, value in values.items():
            self.inputs[field].setText(value)

    def save(self) -> None:
        """Send the form; field-tagged errors (local or the agent's) appear next to their field."""
        values = {f: box.text() for f, box in self.inputs.items()}
        self.errors.clear()
        self.buttons.button(QDialogButtonBox.StandardButton.Save).setEnabled(False)
        if self.row is None:
            coro = self.model.create(
                values["name"], values["value"], values["labels"], values["description"]
            )
        else:
            coro = self.model.update(
                self.row.name, values["value"], values["labels"], values["description"]
            )
        run_task(self, coro, done=self._saved, failed=self._failed)

    def _saved(self, row: SecretRow) -> None:
        self.inputs["value"].clear()
        self.saved.emit(row)
        self.accept()

    def _failed(self, error: KeyVaultError) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Save).setEnabled(True)
        field = self.errors.show(error)
        if field in self.inputs:
            self.inputs[field].setFocus()
