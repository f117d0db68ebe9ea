"""Users of the organisation: invite, change role, remove, reset a password, end sessions."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QWidget,
)

from apps.core.navigation import area
from apps.core.viewmodels.users import ROLES
from apps.desktop import clipboard
from apps.desktop.models.users_model import UsersTableModel
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
    from apps.core.viewmodels.users import UserRow

WIDTHS = (320, 100, 160)


#: what an issued token is, as the shown-once panel titles it
KINDS = {"invitation": "Invitation", "reset": "Password reset"}


class UsersView(QWidget):
    """The organisation's users (admins and owners manage them; others see their sessions)."""

    def __init__(self, shell: Shell, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shell = shell
        self.vm = shell.users
        self.model = UsersTableModel(parent=self)
        self.proxy = proxy_for(self.model, parent=self)
        self.table = table_for(self.proxy, WIDTHS, stretch=0)
        self.email = QLineEdit(placeholderText="new.operator@example.com")
        self.role = QComboBox()
        self.role.addItems(list(ROLES))
        self.invite_button = QPushButton("Invite")
        self.role_button = QPushButton("Set role of selected")
        self.remove_button = QPushButton("Remove…")
        self.reset_button = QPushButton("Reset password…")
        self.sessions_button = QPushButton("End sessions…")
        self.errors = FieldErrors(["email", "role"])
        self.shown = ShownOncePanel()  # the invitation / reset token, shown only now
        self.issued, self.copy_button = self.shown.command, self.shown.copy_button
        self.status = QLabel()
        self.status.setObjectName("summary")
        self.question: QMessageBox | None = None
        self._build()
        follow(self, self.vm.subscribe, self.paint)
        self.paint(self.vm.state)

    def _build(self) -> None:
        reload_button = QPushButton("Reload")
        reload_button.clicked.connect(self.refresh)
        self.invite_button.clicked.connect(self.invite)
        self.email.returnPressed.connect(self.invite)
        self.role_button.clicked.connect(self.set_role)
        self.remove_button.clicked.connect(self.remove)
        self.reset_button.clicked.connect(self.reset)
        self.sessions_button.clicked.connect(self.end_sessions)
        self.copy_button.clicked.connect(self.copy_command)
        row, _title = title_row(area("users").heading, reload_button)
        form = QHBoxLayout()
        for widget in (QLabel("E-mail"), self.email, QLabel("Role"), self.role):
            form.addWidget(widget)
        form.addWidget(self.invite_button)
        form.addWidget(self.role_button)
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        for button in (self.reset_button, self.sessions_button, self.remove_button):
            bottom.addWidget(button)
        layout = view_layout(self)
        layout.addLayout(row)
        layout.addLayout(form)
        layout.addWidget(self.errors.labels["email"])
        layout.addWidget(self.errors.form)
        layout.addWidget(self.shown)
        layout.addWidget(self.table, 1)
        layout.addLayout(bottom)

    def showEvent(self, event: QShowEvent) -> None:
        """Reload whenever the view is shown."""
        super().showEvent(event)
        self.refresh()

    def hideEvent(self, event: QHideEvent) -> None:
        """Leaving the view forgets the token shown (it was shown once)."""
        super().hideEvent(event)
        self.vm.clear_issued()

    def refresh(self) -> None:
        """Reload the users."""
        run_task(self, self.vm.refresh())

    def paint(self, state: Any) -> None:
        """The list, the token shown once, the status line, which buttons apply."""
        self.model.set_rows(state.users)
        issued = state.issued
        if issued is None:
            self.shown.forget()
        elif self.issued.text() != issued.command:
            self.shown.show_command(
                f"<b>{KINDS.get(issued.kind, issued.kind)} for {html.escape(issued.email)}.</b>"
                " It is shown only now — send them this command:",
                issued.command,
                "Single use · the copy is wiped from the clipboard after 30 s · "
                "leaving this view forgets it",
            )
        manage = self.vm.can_manage
        for widget in (self.email, self.role, self.invite_button, self.role_button):
            widget.setEnabled(manage)
        for button in (self.remove_button, self.reset_button):
            button.setEnabled(manage)
        count = len(state.users)
        text = (
            f"{count} user{'' if count == 1 else 's'}"
            if manage
            else (f"you have {len(state.sessions)} live session(s); only admins manage users")
        )
        show_status(self.status, text + (" · loading…" if state.loading else ""), state.error)

    def chosen(self) -> UserRow | None:
        """The selected user, or None."""
        row: UserRow | None = selected(self.table, self.model)
        return row

    def invite(self) -> None:
        """Invite the e-mail with the role chosen."""
        self.errors.clear()
        coro = self.vm.invite(self.email.text(), self.role.currentText())
        run_task(self, coro, done=lambda _: self.email.clear(), failed=self._failed)

    def _failed(self, error: KeyVaultError) -> None:
        if self.errors.show(error) is None:
            show_status(self.status, "", error.message)

    def set_role(self) -> None:
        """Give the selected user the role chosen."""
        row = self.chosen()
        if row is not None:
            run_task(self, self.vm.set_role(row.id, self.role.currentText()), failed=self._failed)

    def _confirm(self, question: str, action: str, work: Any) -> QMessageBox | None:
        row = self.chosen()
        if row is None:
            return None

        def confirmed() -> None:
            run_task(self, work(row.id), failed=self._failed)

        self.question = ask(self, question.format(email=row.email), action, confirmed)
        return self.question

    def remove(self) -> QMessageBox | None:
        """Remove the selected user after a confirmation."""
        return self._confirm(
            "Remove {email}? Their sessions end at once.", "Remove", self.vm.remove
        )

    def reset(self) -> QMessageBox | None:
        """Reset the selected user's password after a confirmation."""
        question = "Lock {email}'s password and end their sessions? They choose a new one."
        return self._confirm(question, "Reset", self.vm.reset_password)

    def end_sessions(self) -> QMessageBox | None:
        """End every session of the selected user (or yours) after a confirmation."""
        if self.chosen() is None and not self.vm.can_manage:
            return None
        return self._confirm("End every session of {email}?", "End sessions", self.vm.end_sessions)

    def copy_command(self) -> None:
        """Copy the command with the token; the clipboard is wiped after 30 s."""
        issued = self.vm.state.issued
        if issued is not None:
            clipboard.copy_secret(issued.command)
            show_status(self.status, "copied (cleared from the clipboard in 30 s)")
