"""The credential store on a real Secret Service (GNOME Keyring on a private D-Bus), and its
refusal of keyrings that are not OS keyrings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apps.core.keyring_store import CredentialStore, KeyringUnavailableError
from common.metadata_key import MetadataKey

URL = "https://cp.example.com"


def test_a_fresh_process_picks_the_real_secret_service(keyring_env: dict[str, str]) -> None:
    code = (
        "import keyring; from apps.core.keyring_store import CredentialStore\n"
        "print(type(keyring.get_keyring()).__module__, type(keyring.get_keyring()).__name__)\n"
        "print(CredentialStore().name)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ),
        cwd=Path(__file__).parents[2],
    )
    assert out.stdout.splitlines() == [
        "keyring.backends.SecretService Keyring",
        "keyring.backends.SecretService.Keyring",
    ]


def test_round_trip_through_the_secret_service(keyring_env: dict[str, str]) -> None:
    store = CredentialStore()
    assert store.name == "keyring.backends.SecretService.Keyring"
    token = "kvs_" + "t" * 40
    assert store.get_session_token(URL, "a@example.com") is None
    store.set_session_token(URL + "/", "a@example.com", token)
    assert store.get_session_token(URL, "a@example.com") == token
    assert store.get_session_token(URL, "b@example.com") is None
    assert store.get_session_token("https://other.example.com", "a@example.com") is None

    key = MetadataKey.generate()
    assert store.get_metadata_key("org_1") is None
    store.set_metadata_key("org_1", key)
    loaded = store.get_metadata_key("org_1")
    assert loaded is not None and loaded.fingerprint == key.fingerprint

    # a second store (another process would be the same) sees the same entries
    again = CredentialStore()
    assert again.get_session_token(URL, "a@example.com") == token

    # the values are in the daemon's encrypted keyring file, not in plain text anywhere on disk
    data = Path(keyring_env["XDG_DATA_HOME"])
    blobs = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    assert blobs, "gnome-keyring wrote no keyring file"
    assert token.encode() not in blobs
    assert key.to_text().encode() not in blobs
    for text in (repr(store), repr(again)):
        assert token not in text and key.to_text() not in text

    store.delete_session_token(URL, "a@example.com")
    store.delete_session_token(URL, "a@example.com")  # nothing left: no error
    store.delete_metadata_key("org_1")
    assert store.get_session_token(URL, "a@example.com") is None
    assert store.get_metadata_key("org_1") is None


def test_entries_are_real_secret_service_items(keyring_env: dict[str, str]) -> None:
    import secretstorage

    CredentialStore().set_session_token(URL, "a@example.com", "kvs_item")
    conn = secretstorage.dbus_init()
    try:
        items = list(
            secretstorage.search_items(
                conn, {"service": "keyvault session " + URL, "username": "a@example.com"}
            )
        )
        assert [i.get_secret() for i in items] == [b"kvs_item"]
    finally:
        conn.close()


def test_no_secret_service_is_a_clear_error(no_keyring: None) -> None:
    with pytest.raises(KeyringUnavailableError) as info:
        CredentialStore()
    message = info.value.message
    assert "no OS keyring" in message
    assert "gnome-keyring" in message and "PYTHON_KEYRING_BACKEND" in message
    assert "\n" not in message
    assert info.value.exit_code == 78


def test_fail_keyring_is_refused_even_when_named(
    no_keyring: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    with pytest.raises(KeyringUnavailableError, match="stores nothing"):
        CredentialStore()


def test_a_plaintext_keyring_is_refused(no_keyring: None) -> None:
    from tests.apps.fakes import PlaintextKeyring

    with pytest.raises(KeyringUnavailableError, match="plain file"):
        CredentialStore(PlaintextKeyring())


def test_a_plaintext_keyring_in_keyringrc_is_refused(
    keyring_env: dict[str, str],
) -> None:
    """keyring's own config file does not count as the explicit override, even with a
    Secret Service running."""
    rc = Path(keyring_env["XDG_CONFIG_HOME"]) / "python_keyring" / "keyringrc.cfg"
    rc.parent.mkdir(parents=True)
    rc.write_text("[backend]\ndefault-keyring=tests.apps.fakes.PlaintextKeyring\n")
    with pytest.raises(KeyringUnavailableError, match="plain file"):
        CredentialStore()


def test_the_environment_override_is_honoured(
    no_keyring: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.apps.fakes.PlaintextKeyring")
    store = CredentialStore()
    assert store.name == "tests.apps.fakes.PlaintextKeyring"
    store.set_session_token(URL, "x@example.com", "kvs_x")
    assert store.get_session_token(URL, "x@example.com") == "kvs_x"


def test_a_bad_override_names_the_variable(
    no_keyring: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "no.such.Backend")
    with pytest.raises(KeyringUnavailableError, match=r"PYTHON_KEYRING_BACKEND=no\.such\.Backend"):
        CredentialStore()


def test_a_daemon_that_went_away_is_a_keyring_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.apps.secret_service import MissingTool, secret_service
    from tests.conftest import need_service

    try:
        with secret_service(tmp_path / "kr") as env:
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
            store = CredentialStore()
    except MissingTool as exc:
        need_service("gnome-keyring", exc)
    with pytest.raises(KeyringUnavailableError, match="refused to read the session token"):
        store.get_session_token(URL, "a@example.com")


# ---------------------------------------------------------------- agent tokens, memory keyring


def test_agent_tokens_in_the_secret_service(keyring_env: dict[str, str]) -> None:
    import secretstorage

    store = CredentialStore()
    assert store.get_agent_token("https://vault-1:8443") is None
    store.set_agent_token("https://Vault-1:8443/", "kvt_agent_one")
    store.set_agent_token("https://vault-2:8443", "kvt_agent_two")
    assert CredentialStore().get_agent_token("https://vault-1:8443") == "kvt_agent_one"
    assert store.get_agent_token("https://vault-2:8443") == "kvt_agent_two"

    conn = secretstorage.dbus_init()
    try:
        items = list(
            secretstorage.search_items(
                conn, {"service": "keyvault agent https://vault-1:8443", "username": "token"}
            )
        )
        assert [i.get_secret() for i in items] == [b"kvt_agent_one"]
    finally:
        conn.close()

    store.delete_agent_token("https://vault-1:8443")
    store.delete_agent_token("https://vault-1:8443")  # nothing left: no error
    assert store.get_agent_token("https://vault-1:8443") is None
    assert store.get_agent_token("https://vault-2:8443") == "kvt_agent_two"
    assert not store.weak


def test_the_memory_store_works_and_says_it_is_weak(no_keyring: None) -> None:
    import keyring.core

    from apps.core.keyring_store import MemoryKeyring

    store = CredentialStore.memory()
    assert store.weak and store.name == "apps.core.keyring_store.MemoryKeyring"
    store.set_session_token(URL, "a@example.com", "kvs_mem")
    store.set_agent_token("https://vault-1:8443", "kvt_mem")
    key = MetadataKey.generate()
    store.set_metadata_key("org_1", key)
    assert store.get_session_token(URL, "a@example.com") == "kvs_mem"
    assert store.get_agent_token("https://vault-1:8443") == "kvt_mem"
    loaded = store.get_metadata_key("org_1")
    assert loaded is not None and loaded.fingerprint == key.fingerprint
    for text in (repr(store), repr(store.backend)):
        assert "kvs_mem" not in text and "kvt_mem" not in text
    store.delete_agent_token("https://vault-1:8443")
    store.delete_agent_token("https://vault-1:8443")
    assert store.get_agent_token("https://vault-1:8443") is None

    # each memory store is its own; nothing is shared or kept
    assert CredentialStore.memory().get_session_token(URL, "a@example.com") is None
    # keyring never chooses it by itself, and the ordinary store still refuses it
    assert not isinstance(keyring.core._detect_backend(), MemoryKeyring)
    with pytest.raises(KeyringUnavailableError, match="not an OS keyring"):
        CredentialStore(MemoryKeyring())
    with pytest.raises(KeyringUnavailableError, match="no OS keyring"):
        CredentialStore()


def test_plaintext_is_still_refused_next_to_the_memory_store(no_keyring: None) -> None:
    from tests.apps.fakes import PlaintextKeyring

    assert CredentialStore.memory().weak
    with pytest.raises(KeyringUnavailableError, match="plain file"):
        CredentialStore(PlaintextKeyring())


# ---------------------------------------------------------------- a keyring daemon that dies


class _Flaky:
    """A keyring backend whose first call fails as the given error, then works."""

    def __init__(self, error: Exception) -> None:
        self.error, self.calls = error, 0

    def get_password(self, service: str, username: str) -> str | None:
        self.calls += 1
        if self.calls == 1:
            raise self.error
        return "tok"


def test_a_call_that_lost_the_service_is_made_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """gnome-keyring-daemon aborts on a known race with short-lived clients; the session starts
    it again, so a call cut off that way is retried once (after a pause), and nothing else is."""
    import apps.core.keyring_store as ks

    monkeypatch.setattr(ks, "RETRY_AFTER", 0.01)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.apps.test_keyring_store._Flaky")
    dropped = _Flaky(RuntimeError("Message recipient disconnected from message bus"))
    store = CredentialStore(dropped)  # type: ignore[arg-type]
    assert store.get_session_token(URL, "a@example.com") == "tok"
    assert dropped.calls == 2
    cause = RuntimeError("Failed to create the collection")
    cause.__cause__ = ConnectionResetError("Connection reset by peer")
    assert CredentialStore(_Flaky(cause)).get_session_token(URL, "a@example.com") == "tok"  # type: ignore[arg-type]
    locked = _Flaky(RuntimeError("Failed to unlock the collection!"))
    with pytest.raises(KeyringUnavailableError, match="refused to read the session token"):
        CredentialStore(locked).get_session_token(URL, "a@example.com")  # type: ignore[arg-type]
    assert locked.calls == 1  # a refusal is final: asked once


def test_the_token_survives_the_keyring_daemon_dying(keyring_env: dict[str, str]) -> None:
    """The daemon is killed as its known abort kills it (SIGABRT); the next read still returns
    the stored token: the bus started a new daemon on the same keyring (as a desktop session
    does after a crash; tests/apps/secret_service.py), the read was retried."""
    import signal

    store = CredentialStore()
    store.set_session_token(URL, "a@example.com", "kvs_still-here")
    data_home = keyring_env["XDG_DATA_HOME"].encode()
    victims = []
    for pid in subprocess.run(
        ["pgrep", "-f", "gnome-keyring-daemon"], capture_output=True, text=True, check=False
    ).stdout.split():
        try:
            if data_home in Path(f"/proc/{pid}/environ").read_bytes():
                victims.append(int(pid))
        except OSError:
            continue
    assert len(victims) == 1, victims
    os.kill(victims[0], signal.SIGABRT)
    assert store.get_session_token(URL, "a@example.com") == "kvs_still-here"
