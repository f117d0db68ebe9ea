"""Enrollment tokens: make one for a new agent, shown once with its command; list and revoke."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import (
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QWidget,
)

from apps.core.navigation import area
from apps.desktop import clipboard
from apps.desktop.models import stamp
from apps.desktop.models.tokens_model import TokensTableModel
from apps.desktop.tasks import run_task
from apps.desktop.views import follow, title_row, view_layout
from apps.desktop.views.ops_kit import (
    FieldErrors,
    ShownOncePanel,
    ask,
    proxy_for,
    selected,
    show_status,
    table_for,
)
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from PySide6.QtGui import QHideEvent, QShowEvent

    from apps.core.shell import Shell
    from apps.core.viewmodels.enrollment import CreatedToken, TokenRow

WIDTHS = (240, 80, 130, 130, 130, 200)


class CreatedPanel(ShownOncePanel):
    """The token just made: the exact command to run, a copy button, when it expires, and
    the new agent followed from pending to its first inventory."""

    def __init__(self) -> None:
        super().__init__()
        self.follow = QLabel()
        self.follow.setObjectName("follow")
        self.body.addWidget(self.follow)

    def show_token(self, created: CreatedToken | None) -> None:
        """Show a new token's command, or hide and forget it."""
        if created is None:
            self.forget()
            return
        self.show_command(
            "<b>Token created.</b> It is shown only now — run this on the new agent's host:",
            created.command,
            f"Single use · expires {stamp(created.expires_at)} · the copy is wiped from the "
            "clipboard after 30 s · leaving this view forgets the token",
        )


class EnrollmentView(QWidget):
    """Enroll a new agent: a single-use token and the exact command to run on its host."""

    def __init__(self, shell: Shell, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shell = shell
        self.vm = shell.enrollment
        self.model = TokensTableModel(parent=self, vault_name=shell.names.vault)
        self.proxy = proxy_for(self.model, parent=self)
        self.table = table_for(self.proxy, WIDTHS, stretch=0)
        self.name = QLineEdit(placeholderText="e.g. billing-prod")
        self.description = QLineEdit(placeholderText="e.g. billing-prod host 2")
        self.ttl_hours = QLineEdit("24")
        self.ttl_hours.setMaximumWidth(90)
        self.create_button = QPushButton("Create token")
        self.revoke_button = QPushButton("Revoke…")
        self.errors = FieldErrors(["name", "description", "ttl_hours"])
        self.created = CreatedPanel()
        self.status = QLabel()
        self.status.setObjectName("summary")
        self.question: QMessageBox | None = None
        self._build()
        follow(self, self.vm.subscribe, self.paint)
        self.paint(self.vm.state)

    def _build(self) -> None:
        reload_button = QPushButton("Reload")
        reload_button.clicked.connect(self.refresh)
        self.create_button.setDefault(True)
        self.create_button.clicked.connect(self.create_token)
        self.description.returnPressed.connect(self.create_token)
        self.name.returnPressed.connect(self.create_token)
        self.ttl_hours.returnPressed.connect(self.create_token)
        self.revoke_button.clicked.connect(self.revoke)
        self.created.copy_button.clicked.connect(self.copy_command)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._selection())
        row, _title = title_row(area("enrollment").heading, reload_button)
        form = QGridLayout()
        form.addWidget(QLabel("Vault name"), 0, 0)
        form.addWidget(self.name, 0, 1)
        form.addWidget(QLabel("Description"), 0, 2)
        form.addWidget(self.description, 0, 3)
        form.addWidget(QLabel("Valid for (hours)"), 0, 4)
        form.addWidget(self.ttl_hours, 0, 5)
        form.addWidget(self.create_button, 0, 6)
        form.addWidget(self.errors.labels["name"], 1, 1)
        form.addWidget(self.errors.labels["description"], 1, 3)
        form.addWidget(self.errors.labels["ttl_hours"], 1, 4, 1, 3)
        form.setColumnStretch(3, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.revoke_button)
        layout = view_layout(self)
        layout.addLayout(row)
        layout.addLayout(form)
        layout.addWidget(self.errors.form)
        layout.addWidget(self.created)
        layout.addWidget(self.table, 1)
        layout.addLayout(bottom)

    def showEvent(self, event: QShowEvent) -> None:
        """Reload the tokens whenever the view is shown (one may have been used since)."""
        super().showEvent(event)
        self.refresh()

    def hideEvent(self, event: QHideEvent) -> None:
        """Leaving the view forgets the token shown (it was shown once)."""
        super().hideEvent(event)
        self.vm.clear_created()

    def refresh(self) -> None:
        """Reload the tokens."""
        run_task(self, self.vm.refresh())

    def paint(self, state: Any) -> None:
        """The created-token panel, the list, the status line."""
        self.created.show_token(state.created)
        follow = state.follow
        self.created.follow.setText(f"<b>New agent:</b> {follow.text}" if follow else "")
        self.model.set_rows(state.tokens)
        active = sum(1 for t in state.tokens if t.state == "active")
        count = len(state.tokens)
        text = f"{count} token{'' if count == 1 else 's'}, {active} active"
        show_status(self.status, text + (" · loading…" if state.loading else ""), state.error)
        self._selection()

    def _selection(self) -> None:
        row = self.chosen()
        self.revoke_button.setEnabled(row is not None and row.state == "active")

    def chosen(self) -> TokenRow | None:
        """The selected token, or None."""
        row: TokenRow | None = selected(self.table, self.model)
        return row

    def create_token(self) -> None:
        """Make a token from the form (field errors next to the fields)."""
        self.errors.clear()
        self.create_button.setEnabled(False)
        coro = self.vm.create(self.description.text(), self.ttl_hours.text(), self.name.text())
        run_task(self, coro, done=self._created, failed=self._failed)

    def _created(self, _created: CreatedToken) -> None:
        self.create_button.setEnabled(True)
        self.description.clear()
        self.name.clear()

    def _failed(self, error: KeyVaultError) -> None:
        self.create_button.setEnabled(True)
        field = self.errors.show(error)
        if field == "ttl_hours":
            self.ttl_hours.setFocus()
        elif field == "description":
            self.description.setFocus()
        elif field == "name":
            self.name.setFocus()

    def copy_command(self) -> None:
        """Copy the enroll command (with its token); the clipboard is wiped after 30 s."""
        created = self.vm.state.created
        if created is not None:
            clipboard.copy_secret(created.command)
            show_status(
                self.status, "copied the enroll command (cleared from the clipboard in 30 s)"
            )

    def revoke(self) -> QMessageBox | None:
        """Revoke the selected token after a confirmation."""
        row = self.chosen()
        if row is None:
            return None

        def confirmed() -> None:
            run_task(self, self.vm.revoke(row.id))

        question = "Revoke this enrollment token? No agent can use it after."
        self.question = ask(self, question, "Revoke", confirmed)
        return self.question
