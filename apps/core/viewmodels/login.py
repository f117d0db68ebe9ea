"""Logging in: the form's defaults, checks before any network call, one-line failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apps.core.keyring_store import CredentialStore
from apps.core.session import Session, previous_profile
from apps.core.viewmodels.base import Listener, ViewModel
from common.cpclient import TooManyAttemptsError, check_url
from common.errors import AuthenticationError, KeyVaultError, UnavailableError, ValidationError
from common.pinning import check_pin

WRONG_CREDENTIALS = "wrong e-mail address or password"


@dataclass(frozen=True)
class LoginState:
    """The login form's values (never the password) and how the last attempt went."""

    url: str = ""
    email: str = ""
    ca_file: str | None = None
    busy: bool = False
    error: str | None = None
    loading: bool = False


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(message, details={"field": field})


def split_trust(value: str | None) -> tuple[str | None, str | None]:
    """The form's "CA file or pin" field as ``(ca_file, ca_pin)``: a ``sha256:…`` value is a pin."""
    value = (value or "").strip()
    if not value:
        return None, None
    if value.lower().startswith("sha256:"):
        return None, value
    return value, None


def check_form(url: str, email: str, password: str, ca_file: str | None) -> tuple[str, str]:
    """(url, email) cleaned, or a ValidationError naming the form field."""
    url, email = url.strip().rstrip("/"), email.strip()
    if not url:
        raise _invalid("url", "enter the control plane's URL, e.g. https://cp.example.com")
    try:
        url = check_url(url)
    except ValidationError as exc:
        raise _invalid("url", exc.message) from None
    if not email:
        raise _invalid("email", "enter your e-mail address")
    local, _, domain = email.partition("@")
    if not local or not domain or " " in email:
        raise _invalid("email", f"{email!r} is not an e-mail address")
    if not password:
        raise _invalid("password", "enter your password")
    ca_path, pin = split_trust(ca_file)
    if pin is not None:
        try:
            check_pin(pin)
        except ValidationError as exc:
            raise _invalid("ca_file", exc.message) from None
    if ca_path and not Path(ca_path).expanduser().is_file():
        raise _invalid("ca_file", f"CA file {ca_path} does not exist")
    return url, email


def _one_line(exc: KeyVaultError) -> str:
    """The message a person sees for a failed login."""
    if isinstance(exc, TooManyAttemptsError):
        return exc.message  # the server says for how long
    if isinstance(exc, AuthenticationError):
        return WRONG_CREDENTIALS
    if isinstance(exc, UnavailableError):
        return exc.message  # "cannot reach the control plane at URL: …"
    return exc.message


class LoginViewModel(ViewModel[LoginState]):
    """The login screen: pre-fill from the saved profile, log in, or resume a saved session."""

    def __init__(self, on_change: Listener | None = None) -> None:
        super().__init__(LoginState(), on_change)

    def defaults(self) -> LoginState:
        """Fill url, e-mail and CA file from the saved profile (if any); returns the state."""
        profile = previous_profile()
        if profile is None:
            return self.state
        return self._set(
            url=profile.control_plane_url,
            email=profile.email,
            ca_file=profile.ca_file or profile.ca_pin,
        )

    async def login(
        self,
        url: str,
        email: str,
        password: str,
        ca_file: str | None = None,
        store: CredentialStore | None = None,
    ) -> Session:
        """Log in (in a thread: it blocks on HTTP and the keyring); raises a one-line error."""
        url, email = check_form(url, email, password, ca_file)
        ca_file = (ca_file or "").strip() or None
        ca_path, pin = split_trust(ca_file)
        self._set(url=url, email=email, ca_file=ca_file, busy=True, error=None)
        try:
            session = await asyncio.to_thread(
                Session.login, url, email, password, ca_file=ca_path, store=store, ca_pin=pin
            )
        except KeyVaultError as exc:
            message = _one_line(exc)
            self._set(busy=False, error=message)
            exc.message, exc.args = message, (message,)
            raise exc from None
        self._set(busy=False, error=None)
        return session

    async def login_sso(
        self,
        url: str,
        org_id: str,
        open_browser: Callable[[str], Any],
        ca_file: str | None = None,
        store: CredentialStore | None = None,
    ) -> Session:
        """Sign in through the organisation's identity provider (browser + loopback redirect,
        in a thread); raises a one-line error."""
        url = url.strip().rstrip("/")
        try:
            url = check_url(url)
        except ValidationError as exc:
            raise _invalid("url", exc.message) from None
        ca_path, pin = split_trust(ca_file)
        self._set(url=url, ca_file=(ca_file or "").strip() or None, busy=True, error=None)
        try:
            session = await asyncio.to_thread(
                Session.login_sso,
                url,
                org_id,
                open_browser,
                ca_file=ca_path,
                store=store,
                ca_pin=pin,
            )
        except KeyVaultError as exc:
            self._set(busy=False, error=exc.message)
            raise
        self._set(busy=False, error=None, email=session.profile.email)
        return session

    def resume(self, store: CredentialStore | None = None) -> Session | None:
        """The saved session (profile + token in the keyring), or None."""
        try:
            return Session.current(store)
        except KeyVaultError:
            return None
