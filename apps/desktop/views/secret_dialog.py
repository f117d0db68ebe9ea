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

from apps.desktop.models.secrets_model import labels_text
from apps.desktop.tasks import run_task
from apps.desktop.views.ops_kit import FieldErrors
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel, SecretRow

FIELDS = ("name", "value", "labels", "description")


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
        self.setWindowTitle(f"Edit {row.name}" if row else "New secret")
        self.setMinimumWidth(500)
        self.errors = FieldErrors(list(FIELDS))
        self.inputs = {f: QLineEdit() for f in FIELDS}
        for field, box in self.inputs.items():
            box.setObjectName(field)
            box.returnPressed.connect(self.save)
        self.inputs["name"].setPlaceholderText("db/password")
        self.inputs["value"].setPlaceholderText("the secret value")
        self.inputs["value"].setEchoMode(QLineEdit.EchoMode.Password)
        self.inputs["labels"].setPlaceholderText("env=prod, team=db")
        self.inputs["description"].setPlaceholderText("optional")
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
        hints = {
            "value": "a new value makes a new version; empty keeps the current one"
            if self.row
            else "",
            "labels": "k=v, k=v",
        }
        form = QFormLayout()
        for field, label in zip(FIELDS, ("Name", "Value", "Labels", "Description"), strict=True):
            column = QVBoxLayout()
            column.setSpacing(2)
            column.addWidget(self.inputs[field])
            if field == "value":
                column.addWidget(self.show_value)
            if hints.get(field):
                note = QLabel(hints[field])
                note.setObjectName("muted")
                column.addWidget(note)
            column.addWidget(self.errors.labels[field])
            form.addRow(label, column)
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
