"""The operator's current profile and session.

The profile — control-plane URL, e-mail, organisation, CA file — is a small JSON file,
``$XDG_CONFIG_HOME/keyvault/profile.json`` (``~/.config/keyvault/profile.json`` by default). It
holds nothing secret: the session token lives only in the OS keyring
(:mod:`apps.core.keyring_store`), and so does the organisation's metadata key.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apps.core.keyring_store import CredentialStore
from common.errors import AuthenticationError, ConfigError, KeyVaultError, UnavailableError

if TYPE_CHECKING:
    from common.cpclient import AsyncControlPlaneClient, ControlPlaneClient
    from common.metadata_key import MetadataKey

PROFILE_NAME = "profile.json"


class NotLoggedInError(AuthenticationError):
    """No profile, or no session token for it in the keyring."""

    code = "not_logged_in"


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/keyvault`` (default ``~/.config/keyvault``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "keyvault"


def profile_path() -> Path:
    """Where the current profile is kept."""
    return config_dir() / PROFILE_NAME


@dataclass
class Profile:
    """Which control plane, as whom, in which organisation (nothing secret)."""

    control_plane_url: str
    email: str
    org_id: str | None = None
    org_name: str | None = None
    role: str | None = None
    ca_file: str | None = None
    gateway_url: str | None = None
    ca_pin: str | None = None  # sha256:… of the control plane's key, instead of a CA file

    def login_hint(self) -> str:
        """The command that logs this profile in again."""
        return f"keyvault login --control-plane {self.control_plane_url} --email {self.email}"

    @classmethod
    def from_json(cls, doc: Any) -> Profile:
        """Parse the profile file's JSON (unknown keys are ignored)."""
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in doc.items() if k in known}
        for key in ("control_plane_url", "email"):
            if not isinstance(values.get(key), str):
                raise ValueError(f"{key} missing")
        return cls(**values)


def load_profile(path: Path | None = None) -> Profile | None:
    """The saved profile, None when there is none, ConfigError when the file is damaged."""
    path = path or profile_path()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Profile.from_json(doc)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"the profile {path} cannot be read ({exc}); delete it and log in again"
        ) from None


def previous_profile() -> Profile | None:
    """The saved profile for pre-filling a login; a damaged file counts as none (login rewrites it)."""
    try:
        return load_profile()
    except ConfigError:
        return None


def write_private_json(path: Path, doc: Any) -> Path:
    """Write JSON atomically (mode 0600, folder 0700): the profile, the saved agents."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_profile(profile: Profile, path: Path | None = None) -> Path:
    """Write the profile atomically (mode 0600, folder 0700)."""
    return write_private_json(path or profile_path(), asdict(profile))


def _client(profile: Profile, token: str | None) -> ControlPlaneClient:
    from common.cpclient import ControlPlaneClient

    return ControlPlaneClient(
        profile.control_plane_url, token, ca_file=profile.ca_file, pin=profile.ca_pin
    )


def _revoke_quietly(profile: Profile, token: str) -> None:
    try:
        with _client(profile, token) as cp:
            cp.logout()
    except KeyVaultError:
        pass  # already revoked or expired, or unreachable: it expires by itself


@dataclass
class Session:
    """A logged-in profile: the profile, the credential store and the session token."""

    profile: Profile
    store: CredentialStore
    token: str = field(repr=False)

    @classmethod
    def login(
        cls,
        control_plane_url: str,
        email: str,
        password: str,
        *,
        ca_file: str | None = None,
        store: CredentialStore | None = None,
        ca_pin: str | None = None,
    ) -> Session:
        """Log in, keep the token in the keyring and save the profile.

        The URL is checked first (plain ``http://`` only to this machine), and the keyring
        *before* the password is sent, so a host without one never creates a session it
        cannot keep. ``ca_file`` or ``ca_pin`` name whom to trust for a private deployment.
        """
        from common.cpclient import check_url

        url = check_url(control_plane_url)
        store = store or CredentialStore()
        profile = Profile(url, email.strip(), ca_file=ca_file, ca_pin=ca_pin)
        with _client(profile, None) as cp:
            result = cp.login(profile.email, password)
            return cls._keep(profile, store, cp, str(result["token"]))

    @classmethod
    def login_sso(
        cls,
        control_plane_url: str,
        org_id: str,
        open_browser: Callable[[str], Any],
        *,
        ca_file: str | None = None,
        store: CredentialStore | None = None,
        ca_pin: str | None = None,
    ) -> Session:
        """Sign in through the organisation's OpenID provider (browser, loopback redirect),
        then keep the token and the profile as :meth:`login` does."""
        from apps.core.sso import sso_login
        from common.cpclient import check_url

        url = check_url(control_plane_url)
        store = store or CredentialStore()
        profile = Profile(url, "", ca_file=ca_file, ca_pin=ca_pin)
        with _client(profile, None) as cp:
            result = sso_login(cp, org_id, open_browser)
            return cls._keep(profile, store, cp, str(result["token"]))

    @classmethod
    def _keep(
        cls, profile: Profile, store: CredentialStore, cp: ControlPlaneClient, token: str
    ) -> Session:
        """Fill the profile from ``/me``, keep the token in the keyring, save the profile."""
        me = cp.me()
        profile.email = str(me["user"]["email"])
        profile.role = str(me["user"]["role"])
        profile.org_id = str(me["org"]["id"])
        profile.org_name = str(me["org"].get("name") or "")
        previous = previous_profile()
        if previous is not None and previous.gateway_url and _same_cp(previous, profile):
            profile.gateway_url = previous.gateway_url
        try:
            old = store.get_session_token(profile.control_plane_url, profile.email)
            store.set_session_token(profile.control_plane_url, profile.email, token)
        except KeyVaultError:
            _revoke_quietly(profile, token)
            raise
        if old and old != token:
            _revoke_quietly(profile, old)
        save_profile(profile)
        return cls(profile, store, token)

    @classmethod
    def current(cls, store: CredentialStore | None = None) -> Session:
        """The saved profile with its token from the keyring, or NotLoggedInError."""
        profile = load_profile()
        if profile is None:
            raise NotLoggedInError(
                "not logged in; run `keyvault login --control-plane URL --email EMAIL`"
            )
        store = store or CredentialStore()
        token = store.get_session_token(profile.control_plane_url, profile.email)
        if not token:
            raise NotLoggedInError(
                f"no session for {profile.email} at {profile.control_plane_url} in the keyring; "
                f"run `{profile.login_hint()}`"
            )
        return cls(profile, store, token)

    def client(self) -> ControlPlaneClient:
        """A blocking operator-API client carrying this session's token."""
        return _client(self.profile, self.token)

    def async_client(self) -> AsyncControlPlaneClient:
        """An asyncio operator-API client carrying this session's token."""
        from common.cpclient import AsyncControlPlaneClient

        return AsyncControlPlaneClient(
            self.profile.control_plane_url,
            self.token,
            ca_file=self.profile.ca_file,
            pin=self.profile.ca_pin,
        )

    def logout(self) -> bool:
        """Revoke the session and forget the token; False if the control plane was unreachable.

        The token is forgotten locally in every case (it then expires on its own).
        """
        revoked = True
        try:
            with self.client() as cp:
                cp.logout()
        except AuthenticationError:
            pass  # already expired or revoked
        except UnavailableError:
            revoked = False
        finally:
            self.store.delete_session_token(self.profile.control_plane_url, self.profile.email)
        return revoked

    def metadata_key(self) -> MetadataKey | None:
        """The organisation's metadata key from the keyring, or None."""
        if not self.profile.org_id:
            return None
        return self.store.get_metadata_key(self.profile.org_id)

    def remember(self, **changes: Any) -> None:
        """Update non-secret profile fields (e.g. ``gateway_url``) and save them."""
        for key, value in changes.items():
            setattr(self.profile, key, value)
        save_profile(self.profile)


def _same_cp(a: Profile, b: Profile) -> bool:
    return a.control_plane_url.lower() == b.control_plane_url.lower()
