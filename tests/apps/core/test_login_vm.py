"""LoginViewModel against a real control plane and a real GNOME Keyring."""

from __future__ import annotations

import socket

import pytest

from apps.core.keyring_store import CredentialStore, KeyringUnavailableError
from apps.core.viewmodels.login import LoginViewModel
from common.cpclient import TooManyAttemptsError
from common.errors import AuthenticationError, UnavailableError, ValidationError
from tests.apps.conftest import OWNER, PASSWORD, LiveControlPlane


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_right_password_keeps_the_token_in_the_keyring(
    keyring_env: dict[str, str], live_cp: LiveControlPlane
) -> None:
    vm = LoginViewModel()
    assert vm.resume() is None
    session = await vm.login(live_cp.url + "/", f"  {OWNER} ", PASSWORD)
    assert session.profile.control_plane_url == live_cp.url
    assert session.profile.org_id == live_cp.org_id and session.profile.role == "owner"
    assert CredentialStore().get_session_token(live_cp.url, OWNER) == session.token
    assert session.token.startswith("kvs_") and session.token not in repr(session)
    assert vm.state.error is None and not vm.state.busy and vm.state.email == OWNER
    fresh = LoginViewModel()
    assert fresh.defaults().url == live_cp.url and fresh.state.email == OWNER
    resumed = fresh.resume()
    assert resumed is not None and resumed.token == session.token


async def test_wrong_password_is_one_clear_line(
    keyring_env: dict[str, str], live_cp: LiveControlPlane
) -> None:
    vm = LoginViewModel()
    with pytest.raises(AuthenticationError) as info:
        await vm.login(live_cp.url, OWNER, "not the password")
    assert info.value.message == "wrong e-mail address or password"
    assert vm.state.error == "wrong e-mail address or password" and not vm.state.busy
    assert CredentialStore().get_session_token(live_cp.url, OWNER) is None


async def test_lock_out_after_three_failures_shows_the_servers_message(
    keyring_env: dict[str, str], live_cp: LiveControlPlane
) -> None:
    vm = LoginViewModel()
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            await vm.login(live_cp.url, OWNER, "wrong")
    with pytest.raises(TooManyAttemptsError) as info:
        await vm.login(live_cp.url, OWNER, "wrong")
    assert "too many failed attempts" in info.value.message and "60 seconds" in info.value.message
    with pytest.raises(TooManyAttemptsError) as again:
        await vm.login(live_cp.url, OWNER, PASSWORD)  # even the right password waits
    assert "try again in" in again.value.message and vm.state.error == again.value.message


async def test_unreachable_url_says_so(keyring_env: dict[str, str]) -> None:
    url = closed_port_url()
    vm = LoginViewModel()
    with pytest.raises(UnavailableError) as info:
        await vm.login(url, OWNER, PASSWORD)
    assert info.value.message.startswith(f"cannot reach the control plane at {url}: ")
    assert "\n" not in info.value.message and vm.state.error == info.value.message


@pytest.mark.parametrize(
    ("url", "email", "password", "ca_file", "field"),
    [
        ("", OWNER, PASSWORD, None, "url"),
        ("cp.example.com", OWNER, PASSWORD, None, "url"),
        ("https://", OWNER, PASSWORD, None, "url"),
        ("URL", "", PASSWORD, None, "email"),
        ("URL", "owner", PASSWORD, None, "email"),
        ("URL", OWNER, "", None, "password"),
        ("URL", OWNER, PASSWORD, "/no/such/ca.pem", "ca_file"),
    ],
)
async def test_bad_fields_are_tagged_before_any_network_call(
    url: str, email: str, password: str, ca_file: str | None, field: str
) -> None:
    seen: list[object] = []
    vm = LoginViewModel(on_change=seen.append)
    with pytest.raises(ValidationError) as info:
        # a closed port: had the form gone to the network this would be an UnavailableError
        await vm.login(closed_port_url() if url == "URL" else url, email, password, ca_file)
    assert info.value.details == {"field": field} and info.value.message
    assert seen == []  # not even "busy"


async def test_no_keyring_is_the_keyring_message(
    no_keyring: None, live_cp: LiveControlPlane
) -> None:
    vm = LoginViewModel()
    with pytest.raises(KeyringUnavailableError) as info:
        await vm.login(live_cp.url, OWNER, PASSWORD)
    assert "keyring" in info.value.message and vm.state.error == info.value.message
    assert vm.resume() is None
