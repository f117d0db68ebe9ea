"""The login dialog: URL, e-mail, password, CA file; each mistake shown next to its field."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from apps.core.viewmodels.login import LoginViewModel
from apps.desktop.tasks import run_task
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.keyring_store import CredentialStore
    from apps.core.session import Session

FIELDS = ("url", "email", "password", "ca_file")


PATH_FIELD_MAX = 560  # px: a CA path wider than this scrolls (its full text is the tooltip)


def _fit_path(edit: QLineEdit, path: str) -> None:
    """Widen a path field to show the whole path (up to :data:`PATH_FIELD_MAX`), with the
    path as its tooltip; a longer path shows its end, the file's name, as a field does."""
    needed = edit.fontMetrics().horizontalAdvance(path) + 24  # the frame and text margins
    edit.setMinimumWidth(max(320, min(needed, PATH_FIELD_MAX)))
    edit.setToolTip(path)


class LoginDialog(QDialog):
    """Log in to a control plane; ``session`` is set when the dialog is accepted."""

    def __init__(
        self,
        store: CredentialStore | None = None,
        parent: QWidget | None = None,
        *,
        note: str | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Log in to KeyVault")
        self.store = store
        self.vm = LoginViewModel()
        self.session: Session | None = None
        self._build(note)
        defaults = self.vm.defaults()
        self.inputs["url"].setText(defaults.url)
        self.inputs["email"].setText(defaults.email)
        self.inputs["ca_file"].setText(defaults.ca_file or "")
        first_empty = next((f for f in FIELDS[:3] if not self.inputs[f].text()), "password")
        self.inputs[first_empty].setFocus()

    def _build(self, note: str | None) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 20, 24, 16)
        outer.setSpacing(10)
        heading = QLabel("Log in to KeyVault")
        heading.setObjectName("title")
        outer.addWidget(heading)
        if note:
            hint = QLabel(note)
            hint.setObjectName("muted")
            hint.setWordWrap(True)
            outer.addWidget(hint)
        grid = QGridLayout()
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(2)
        self.inputs: dict[str, QLineEdit] = {}
        self.errors: dict[str, QLabel] = {}
        labels = {
            "url": "Control plane",
            "email": "E-mail",
            "password": "Password",
            "ca_file": "CA file (optional)",
        }
        hints = {
            "url": "https://cp.example.com",
            "email": "you@example.com",
            "password": "",
            "ca_file": "only for a private CA",
        }
        for i, name in enumerate(FIELDS):
            edit = QLineEdit()
            edit.setPlaceholderText(hints[name])
            edit.setMinimumWidth(320)
            error = QLabel()
            error.setObjectName("fieldError")
            error.hide()
            self.inputs[name], self.errors[name] = edit, error
            grid.addWidget(QLabel(labels[name]), i * 2, 0)
            grid.addWidget(error, i * 2 + 1, 1)
            if name == "ca_file":
                row = QHBoxLayout()
                row.addWidget(edit, 1)
                edit.textChanged.connect(lambda text, e=edit: _fit_path(e, text))
                browse = QPushButton("Browse…")
                browse.setAutoDefault(False)
                browse.clicked.connect(self._browse)
                row.addWidget(browse)
                grid.addLayout(row, i * 2, 1)
            else:
                grid.addWidget(edit, i * 2, 1)
        self.inputs["password"].setEchoMode(QLineEdit.EchoMode.Password)
        outer.addLayout(grid)
        self.error = QLabel()
        self.error.setObjectName("fieldError")
        self.error.setWordWrap(True)
        self.error.hide()
        outer.addWidget(self.error)
        self.buttons = QDialogButtonBox()
        self.login_button = self.buttons.addButton("Log in", QDialogButtonBox.ButtonRole.AcceptRole)
        self.login_button.setDefault(True)
        self.sso_button = self.buttons.addButton(
            "Sign in with SSO…", QDialogButtonBox.ButtonRole.ActionRole
        )
        self.sso_button.clicked.connect(self.ask_sso)
        self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.submit)
        self.buttons.rejected.connect(self.reject)
        outer.addWidget(self.buttons)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "CA certificate", "", "PEM (*.pem *.crt)")
        if path:
            self.inputs["ca_file"].setText(path)

    def _clear_errors(self) -> None:
        for label in (*self.errors.values(), self.error):
            label.hide()

    def submit(self) -> None:
        """Check the form and log in (in the background); stays open on failure."""
        self._clear_errors()
        values = {name: edit.text() for name, edit in self.inputs.items()}
        self.set_busy(True)
        coro = self.vm.login(
            values["url"],
            values["email"],
            values["password"],
            values["ca_file"].strip() or None,
            store=self.store,
        )
        run_task(self, coro, done=self._logged_in, failed=self._failed)

    def ask_sso(self) -> None:
        """Ask for the organisation id, then sign in through its identity provider."""
        from PySide6.QtWidgets import QInputDialog

        org_id, ok = QInputDialog.getText(self, "Single sign-on", "Organisation id (org_…)")
        if ok and org_id.strip():
            self.submit_sso(org_id.strip())

    def submit_sso(self, org_id: str) -> None:
        """Sign in through the organisation's provider (a browser opens; in the background)."""
        import webbrowser

        self._clear_errors()
        self.set_busy(True)
        ca_file = self.inputs["ca_file"].text().strip() or None
        url = self.inputs["url"].text()
        coro = self.vm.login_sso(url, org_id, webbrowser.open, ca_file, store=self.store)
        run_task(self, coro, done=self._logged_in, failed=self._failed)

    def set_busy(self, busy: bool) -> None:
        """Disable the form while a login runs."""
        self.login_button.setEnabled(not busy)
        self.login_button.setText("Logging in…" if busy else "Log in")
        for edit in self.inputs.values():
            edit.setEnabled(not busy)

    def _logged_in(self, session: Session) -> None:
        self.session = session
        self.set_busy(False)
        self.inputs["password"].clear()
        self.accept()

    def _failed(self, error: KeyVaultError) -> None:
        self.set_busy(False)
        field = error.details.get("field") if error.details else None
        label = self.errors.get(field) if isinstance(field, str) else None
        if label is None:
            label = self.error
            self.inputs["password"].clear()
            self.inputs["password"].setFocus()
        else:
            self.inputs[str(field)].setFocus()
        label.setText(error.message)
        label.show()

    def field_error(self, name: str) -> str | None:
        """The message shown next to a field (or the form's, for ``""``), None when hidden."""
        label = self.errors.get(name, self.error)
        return label.text() if not label.isHidden() else None
