"""The operator's credentials in the OS keyring: session tokens and the organisation's metadata key.

Only a real OS keyring is used: the freedesktop Secret Service (GNOME Keyring, KWallet) on
Linux, the Keychain on macOS, the Credential Locker on Windows. ``keyring``'s fallbacks —
``fail.Keyring``, which stores nothing, and plaintext files such as ``keyrings.alt``'s — are
refused with a message saying how to get a Secret Service. A person who knowingly wants another
backend names it in ``PYTHON_KEYRING_BACKEND`` (the one override; a ``keyringrc.cfg`` that picks
a non-OS backend is refused too).

The one deliberate exception is :meth:`CredentialStore.memory`: a :class:`MemoryKeyring` kept in
this process only (forgotten on exit), for a person who asks for it (``keyvault tui
--memory-keyring``) or a demo on a host without a keyring; ``store.weak`` says so to the UI.

Entries::

    service "keyvault session <control-plane URL>"   user <e-mail>   → kvs_… session token
    service "keyvault metadata key"                  user <org id>   → kvmk1:… metadata key
    service "keyvault agent <agent URL>"             user "token"    → the agent API token
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any

from common.errors import ConfigError
from common.metadata_key import MetadataKey

try:
    from keyring.backend import KeyringBackend
    from keyring.errors import PasswordDeleteError
except ImportError:  # without the operator extra only the memory keyring works (below)
    KeyringBackend = object  # type: ignore[misc,assignment]
    PasswordDeleteError = LookupError  # type: ignore[misc,assignment]

ENV_BACKEND = "PYTHON_KEYRING_BACKEND"
SESSION_SERVICE = "keyvault session "
METADATA_KEY_SERVICE = "keyvault metadata key"
AGENT_SERVICE = "keyvault agent "
AGENT_USER = "token"

# real OS keyrings, best first when several are viable
OS_BACKENDS = (
    "keyring.backends.SecretService.Keyring",
    "keyring.backends.kwallet.DBusKeyring",
    "keyring.backends.libsecret.Keyring",
    "keyring.backends.macOS.Keyring",
    "keyring.backends.Windows.WinVaultKeyring",
)
NO_STORE_BACKENDS = ("keyring.backends.fail.Keyring", "keyring.backends.null.Keyring")

HOW_TO_GET_ONE = (
    "on Linux run a Secret Service (GNOME Keyring or KWallet) in your session; on a headless "
    "host `apt-get install gnome-keyring dbus`, then inside `dbus-run-session -- bash` run "
    "`echo -n PASSWORD | gnome-keyring-daemon --unlock --components=secrets`; or knowingly "
    f"choose a backend with {ENV_BACKEND}=module.Class"
)


class KeyringUnavailableError(ConfigError):
    """No usable OS keyring, or the keyring refused an operation."""

    code = "keyring_unavailable"


#: what a keyring call that lost its service says (D-Bus: the daemon exited mid-call, or is
#: being started again); such a call is made once more after RETRY_AFTER seconds
DROPPED = ("disconnected", "NoReply", "ServiceUnknown", "Connection reset", "Broken pipe")
RETRY_AFTER = 1.0


def _dropped(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the keyring service went away mid-call."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ConnectionError) or any(w in str(seen) for w in DROPPED):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def backend_name(backend: Any) -> str:
    """``module.Class`` of a keyring backend (instance or class)."""
    cls = backend if isinstance(backend, type) else type(backend)
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_os_backend(backend: Any) -> bool:
    cls = backend if isinstance(backend, type) else type(backend)
    return any(backend_name(c) in OS_BACKENDS for c in cls.__mro__)


def _why_not(backend: Any) -> str:
    name = backend_name(backend)
    if name in NO_STORE_BACKENDS:
        return f"{name}, which stores nothing"
    if "plaintext" in name.lower() or name.startswith("keyrings.alt."):
        return f"{name}, which keeps secrets in a plain file"
    return f"{name}, which is not an OS keyring"


def _import_keyring() -> Any:
    try:
        return importlib.import_module("keyring.core")
    except ImportError:
        raise KeyringUnavailableError(
            "the Python package `keyring` is not installed; install the operator tools with "
            "`pip install 'keyvault[operator]'`"
        ) from None


def _from_env(core: Any, name: str) -> KeyringBackend:
    try:
        backend: KeyringBackend = core.load_keyring(name)
    except Exception as exc:
        raise KeyringUnavailableError(
            f"{ENV_BACKEND}={name} cannot be used: {type(exc).__name__}: {exc}; "
            f"set it to module.Class of an installed backend or unset it"
        ) from None
    if backend_name(backend) in NO_STORE_BACKENDS:
        raise KeyringUnavailableError(
            f"{ENV_BACKEND} selects {_why_not(backend)}; unset it and " + HOW_TO_GET_ONE
        )
    return backend


def _viable_os_backends() -> tuple[list[Any], list[str]]:
    found: list[tuple[float, int, Any]] = []
    reasons: list[str] = []
    for name in OS_BACKENDS:
        module, _, cls_name = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), cls_name)
            priority = cls.priority
        except Exception as exc:  # a backend that cannot run here says why in its exception
            if "SecretService" in name:
                reasons.append(f"Secret Service: {exc}")
            continue
        if priority > 0:
            found.append((priority, -len(found), cls))
    return [cls() for *_, cls in sorted(found, reverse=True)], reasons


def detect_backend() -> KeyringBackend:
    """The keyring to use: ``PYTHON_KEYRING_BACKEND`` if set, else the best real OS keyring.

    Detection runs afresh on each call (``keyring`` itself caches what it found the first time).
    """
    core = _import_keyring()
    override = os.environ.get(ENV_BACKEND)
    if override:
        return _from_env(core, override)
    try:
        configured = core.load_config()
    except Exception:
        configured = None
    if configured is not None:
        check_backend(configured)
        return configured
    found, reasons = _viable_os_backends()
    if not found:
        why = f" ({'; '.join(reasons)})" if reasons else ""
        raise KeyringUnavailableError(
            f"no OS keyring is available for the session token and metadata key{why}; "
            + HOW_TO_GET_ONE
        )
    return found[0]


def check_backend(backend: Any) -> None:
    """Refuse a backend that is not a real OS keyring, unless chosen by ``PYTHON_KEYRING_BACKEND``."""
    name = backend_name(backend)
    if name in NO_STORE_BACKENDS:
        raise KeyringUnavailableError(f"the keyring is {_why_not(backend)}; " + HOW_TO_GET_ONE)
    if _is_os_backend(backend) or os.environ.get(ENV_BACKEND):
        return
    raise KeyringUnavailableError(f"the keyring is {_why_not(backend)}; " + HOW_TO_GET_ONE)


def session_service(control_plane_url: str) -> str:
    """The keyring service name of the session tokens for one control plane."""
    return SESSION_SERVICE + control_plane_url.strip().rstrip("/").lower()


def agent_service(agent_url: str) -> str:
    """The keyring service name of the API token for one agent."""
    return AGENT_SERVICE + agent_url.strip().rstrip("/").lower()


class MemoryKeyring(KeyringBackend):
    """A keyring kept in this process's memory only: nothing survives the process.

    Its priority is below ``keyring``'s own ``fail.Keyring`` (0), so ``keyring``'s detection
    never picks it; only :meth:`CredentialStore.memory` uses it.
    """

    priority = -1

    def __init__(self) -> None:
        super().__init__()
        self._items: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return f"MemoryKeyring(entries={len(self._items)})"

    def get_password(self, service: str, username: str) -> str | None:
        """The stored value, or None."""
        return self._items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        """Store (or replace) a value."""
        self._items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        """Forget a value; PasswordDeleteError when there is none (as every backend does)."""
        if self._items.pop((service, username), None) is None:
            raise PasswordDeleteError("no such entry")


class CredentialStore:
    """Session tokens and metadata keys in the OS keyring; values never appear in ``repr``."""

    def __init__(self, backend: KeyringBackend | None = None) -> None:
        if backend is None:
            backend = detect_backend()
        else:
            check_backend(backend)
        self.backend = backend

    @classmethod
    def memory(cls) -> CredentialStore:
        """A store over a fresh :class:`MemoryKeyring`: the one knowingly weaker choice."""
        store = cls.__new__(cls)
        store.backend = MemoryKeyring()
        return store

    def __repr__(self) -> str:
        return f"CredentialStore(backend={backend_name(self.backend)!r})"

    @property
    def weak(self) -> bool:
        """True when nothing is kept beyond this process (the memory keyring)."""
        return isinstance(self.backend, MemoryKeyring)

    @property
    def name(self) -> str:
        """The backend's ``module.Class``."""
        return backend_name(self.backend)

    def _call(self, what: str, fn: Any, *args: str) -> Any:
        for attempt in (1, 2):
            try:
                return fn(*args)
            except Exception as exc:
                if isinstance(exc, PasswordDeleteError):
                    return None  # nothing to delete
                if attempt == 1 and _dropped(exc):
                    # the keyring service went away mid-call (gnome-keyring-daemon aborts on a
                    # known race with short-lived clients; the session starts it again): once
                    time.sleep(RETRY_AFTER)
                    continue
                # backend errors name the operation, never the value; keep the message short
                detail = str(exc).splitlines()[0][:200] if str(exc) else ""
                raise KeyringUnavailableError(
                    f"the OS keyring ({self.name}) refused to {what}: {type(exc).__name__}"
                    + (f": {detail}" if detail else "")
                    + "; is it unlocked?"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------ session tokens
    def get_session_token(self, control_plane_url: str, email: str) -> str | None:
        """The stored session token of ``email`` at a control plane, or None."""
        service = session_service(control_plane_url)
        value = self._call("read the session token", self.backend.get_password, service, email)
        return value or None

    def set_session_token(self, control_plane_url: str, email: str, token: str) -> None:
        """Store (or replace) the session token of ``email`` at a control plane."""
        service = session_service(control_plane_url)
        self._call("store the session token", self.backend.set_password, service, email, token)

    def delete_session_token(self, control_plane_url: str, email: str) -> None:
        """Forget the session token (no error when there is none)."""
        service = session_service(control_plane_url)
        self._call("delete the session token", self.backend.delete_password, service, email)

    # ------------------------------------------------------------ metadata keys
    def get_metadata_key(self, org_id: str) -> MetadataKey | None:
        """The organisation's metadata key, or None when this keyring does not hold it."""
        text = self._call(
            "read the metadata key", self.backend.get_password, METADATA_KEY_SERVICE, org_id
        )
        if not text:
            return None
        try:
            return MetadataKey.from_text(text)
        except Exception:
            raise KeyringUnavailableError(
                f"the metadata key of organisation {org_id} in the keyring is damaged; import "
                "the key file again with `keyvault org metadata-key import FILE`"
            ) from None

    def set_metadata_key(self, org_id: str, key: MetadataKey) -> None:
        """Store (or replace) the organisation's metadata key."""
        self._call(
            "store the metadata key",
            self.backend.set_password,
            METADATA_KEY_SERVICE,
            org_id,
            key.to_text(),
        )

    def delete_metadata_key(self, org_id: str) -> None:
        """Forget the organisation's metadata key (no error when there is none)."""
        self._call(
            "delete the metadata key", self.backend.delete_password, METADATA_KEY_SERVICE, org_id
        )

    # ------------------------------------------------------------ agent tokens
    def get_agent_token(self, agent_url: str) -> str | None:
        """The stored API token for an agent, or None."""
        service = agent_service(agent_url)
        value = self._call("read the agent token", self.backend.get_password, service, AGENT_USER)
        return value or None

    def set_agent_token(self, agent_url: str, token: str) -> None:
        """Store (or replace) the API token for an agent."""
        service = agent_service(agent_url)
        self._call("store the agent token", self.backend.set_password, service, AGENT_USER, token)

    def delete_agent_token(self, agent_url: str) -> None:
        """Forget an agent's API token (no error when there is none)."""
        service = agent_service(agent_url)
        self._call("delete the agent token", self.backend.delete_password, service, AGENT_USER)
