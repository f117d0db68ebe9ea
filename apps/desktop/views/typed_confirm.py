"""A confirmation for irreversible actions: the operator types the object's name first."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)


class TypedConfirmDialog(QDialog):
    """Accepted only once ``expected`` was typed exactly; the action button stays off until."""

    def __init__(self, parent: QWidget, question: str, expected: str, action: str) -> None:
        super().__init__(parent)
        self.setWindowTitle(action)
        self.expected = expected
        text = QLabel(f"{question}\n\nThis cannot be undone. Type “{expected}” to confirm.")
        text.setWordWrap(True)
        self.field = QLineEdit(placeholderText=expected)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.confirm_button: QPushButton = buttons.addButton(
            action, QDialogButtonBox.ButtonRole.DestructiveRole
        )
        self.confirm_button.setEnabled(False)
        self.confirm_button.clicked.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.field.textChanged.connect(
            lambda value: self.confirm_button.setEnabled(value.strip() == expected)
        )
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addWidget(self.field)
        layout.addWidget(buttons)
