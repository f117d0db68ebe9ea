"""The login form: control-plane URL, e-mail, password and an optional CA file."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Button, Input, Label, LoadingIndicator, Static

from apps.core.viewmodels.login import LoginViewModel
from apps.tui.screens.base import KeyVaultScreen
from common.errors import KeyVaultError, ValidationError

FIELDS = ("url", "email", "password", "ca_file")


class LoginScreen(KeyVaultScreen):
    """Log in to a control plane; the session token goes to the keyring, never to a file."""

    TITLE_TEXT = "Log in"
    AUTO_FOCUS = "#password"
    BINDINGS = [
        Binding("ctrl+s", "submit", "Log in"),
        Binding("ctrl+o", "sso", "Sign in with SSO"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.model = LoginViewModel()

    def compose_body(self) -> ComposeResult:
        """The form, each field with a line for its own error."""
        defaults = self.model.defaults()
        with Vertical(id="login-form"):
            yield Static("Log in to your control plane", id="login-title")
            yield from _field("Control-plane URL", "url", defaults.url, "https://cp.example.com")
            yield from _field("E-mail", "email", defaults.email, "you@example.com")
            yield from _field("Password", "password", "", "", password=True)
            yield from _field(
                "CA file (optional)", "ca_file", defaults.ca_file or "", "/path/to/ca.crt"
            )
            yield Button("Log in", id="login-submit", variant="primary")
            yield LoadingIndicator(id="login-busy")
            yield Static(id="login-error", classes="form-error")

    def on_mount(self) -> None:
        """Start idle; focus the first empty field."""
        self.query_one("#login-busy").display = False
        for name in FIELDS[:3]:
            field = self.query_one(f"#{name}", Input)
            if not field.value:
                field.focus()
                break

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        """Enter in any field submits the form."""
        self.action_submit()

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        """The Log in button submits the form."""
        self.action_submit()

    def action_submit(self) -> None:
        """Log in with the form's values (in a worker); errors go under the form."""
        if self.query_one("#login-busy").display:
            return
        values = {name: self.query_one(f"#{name}", Input).value for name in FIELDS}
        self._show_error(None)
        self._busy(True)
        self.run_worker(self._login(values), group="login", exclusive=True, exit_on_error=False)

    async def _login(self, values: dict[str, str]) -> None:
        app = self.app
        try:
            session = await self.model.login(
                values["url"],
                values["email"],
                values["password"],
                ca_file=values["ca_file"].strip() or None,
                store=getattr(app, "store", None),
            )
            app.login(session)  # type: ignore[attr-defined]
        except KeyVaultError as exc:
            self._busy(False)
            self._show_error(exc)
        except Exception as exc:  # a bug: say so, keep the form
            self._busy(False)
            self._show_error(KeyVaultError(f"unexpected error ({type(exc).__name__})"))

    def action_sso(self) -> None:
        """Ask for the organisation, then sign in through its identity provider."""
        if self.query_one("#login-busy").display:
            return
        from apps.core.session import previous_profile
        from apps.tui.screens.sso_prompt import SsoPromptScreen

        previous = previous_profile()

        def chosen(org_id: str | None) -> None:
            if not org_id:
                return
            url = self.query_one("#url", Input).value
            ca_file = self.query_one("#ca_file", Input).value.strip() or None
            self._show_error(None)
            self._busy(True)
            work = self._sso(url, org_id, ca_file)
            self.run_worker(work, group="login", exclusive=True, exit_on_error=False)

        default = previous.org_id if previous and previous.org_id else ""
        self.app.push_screen(SsoPromptScreen(default), chosen)

    async def _sso(self, url: str, org_id: str, ca_file: str | None) -> None:
        import webbrowser

        app = self.app
        try:
            session = await self.model.login_sso(
                url, org_id, webbrowser.open, ca_file, store=getattr(app, "store", None)
            )
            app.login(session)  # type: ignore[attr-defined]
        except KeyVaultError as exc:
            self._busy(False)
            self._show_error(exc)

    def _busy(self, busy: bool) -> None:
        self.query_one("#login-busy").display = busy
        self.query_one("#login-submit", Button).disabled = busy

    def _show_error(self, exc: KeyVaultError | None) -> None:
        """The message next to its field when it names one, else under the form."""
        for name in FIELDS:
            self.query_one(f"#{name}-error", Label).update("")
            self.query_one(f"#{name}", Input).remove_class("invalid-field")
        field = _field_of(exc)
        general = exc is not None and field not in FIELDS
        self.query_one("#login-error", Static).update(exc.message if exc and general else "")
        if exc is not None and field in FIELDS:
            self.query_one(f"#{field}-error", Label).update(exc.message)
            widget = self.query_one(f"#{field}", Input)
            widget.add_class("invalid-field")
            widget.focus()


def _field_of(exc: KeyVaultError | None) -> str | None:
    """The form field a ValidationError names, if any."""
    if isinstance(exc, ValidationError) and isinstance(exc.details, dict):
        field = exc.details.get("field")
        return field if isinstance(field, str) else None
    return None


def _field(
    title: str, name: str, value: str, placeholder: str, *, password: bool = False
) -> ComposeResult:
    """A labelled input with an error line under it."""
    yield Label(title, classes="field-label")
    yield Input(value=value, placeholder=placeholder, password=password, id=name)
    yield Label("", id=f"{name}-error", classes="field-error")
