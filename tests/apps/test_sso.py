"""Single sign-on end to end against a real OpenID provider started by the test
(``oidc-provider-mock``): the CLI and the login view model, a wrong audience, an expired token,
a removed group, and an organisation that requires SSO. The browser step is driven by the test:
it opens the authorization page, picks the user, and follows the redirect to the loopback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import oidc_provider_mock as oidc_mock
import pytest
from click.testing import CliRunner

from apps.cli.main import cli
from apps.core.keyring_store import CredentialStore
from apps.core.sso import id_token_from_provider
from apps.core.viewmodels.login import LoginViewModel
from common.cpclient import ControlPlaneClient
from common.errors import AuthenticationError
from tests.apps.conftest import OWNER, PASSWORD, LiveControlPlane

CLIENT_ID = "keyvault-operators"
ALICE = "alice@example.com"
NATIVE_SECRET = "the provider's native-app secret"


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """A real OpenID provider on 127.0.0.1; yields its issuer URL."""
    with oidc_mock.run_server_in_thread() as server:
        yield f"http://127.0.0.1:{server.server_port}"


@pytest.fixture(scope="module")
def short_provider() -> Iterator[str]:
    """A provider whose ID tokens live one second."""
    with oidc_mock.run_server_in_thread(access_token_max_age=timedelta(seconds=1)) as server:
        yield f"http://127.0.0.1:{server.server_port}"


def set_user(issuer: str, email: str, groups: list[str]) -> None:
    """The provider's claims for a user (its test API)."""
    done = httpx.put(f"{issuer}/users/{email}", json={"email": email, "groups": groups})
    assert done.status_code == 204, done.text


def browser(email: str) -> Callable[[str], None]:
    """A browser that signs in as ``email`` on the provider's page and follows the redirect."""

    def open_page(url: str) -> None:
        with httpx.Client(follow_redirects=True, timeout=15) as page:
            assert page.get(url).status_code == 200  # the provider's sign-in form
            answer = page.post(url, data={"sub": email})
            assert answer.status_code == 200, answer.text  # the loopback's "signed in" page

    return open_page


def configure(live: LiveControlPlane, issuer: str, **extra: Any) -> str:
    """Trust ``issuer`` for the owner's organisation; returns the organisation id."""
    with ControlPlaneClient(live.url, live.token()) as cp:
        cp.set_sso(
            {
                "issuer": issuer,
                "client_id": CLIENT_ID,
                "native_client_secret": NATIVE_SECRET,
                "role_map": {"kv-admins": "admin", "kv-ops": "operator"},
                **extra,
            }
        )
    return live.org_id


def test_cli_sso_login_creates_the_account_with_the_mapped_role(
    keyring_env: dict[str, str],
    live_cp: LiveControlPlane,
    provider: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    org = configure(live_cp, provider)
    set_user(provider, ALICE, ["kv-ops", "unrelated"])
    monkeypatch.setattr("webbrowser.open", browser(ALICE))
    result = CliRunner().invoke(
        cli, ["login", "--control-plane", live_cp.url, "--sso", org], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert f"as {ALICE} (operator" in result.stdout and "via SSO" in result.stdout
    assert "sign in at: http://127.0.0.1" in result.stderr
    token = CredentialStore().get_session_token(live_cp.url, ALICE)
    with ControlPlaneClient(live_cp.url, token) as cp:
        assert cp.me()["user"] == {"id": cp.me()["user"]["id"], "email": ALICE, "role": "operator"}


async def test_the_apps_login_view_model_signs_in_with_sso(
    live_cp: LiveControlPlane, provider: str
) -> None:
    org = configure(live_cp, provider)
    set_user(provider, "bob@example.com", ["kv-admins"])
    vm = LoginViewModel()
    session = await vm.login_sso(
        live_cp.url, org, browser("bob@example.com"), store=CredentialStore.memory()
    )
    assert session.profile.role == "admin" and vm.state.email == "bob@example.com"
    assert vm.state.error is None and not vm.state.busy


def test_a_token_for_another_audience_is_refused(live_cp: LiveControlPlane, provider: str) -> None:
    org = configure(live_cp, provider)
    set_user(provider, ALICE, ["kv-ops"])
    token = id_token_from_provider(
        provider, "some-other-app", browser(ALICE), client_secret=NATIVE_SECRET
    )
    with ControlPlaneClient(live_cp.url) as cp, pytest.raises(AuthenticationError) as refused:
        cp.sso_login(org, token)
    assert "issued to another application" in refused.value.message


def test_an_expired_token_is_refused(live_cp: LiveControlPlane, short_provider: str) -> None:
    org = configure(live_cp, short_provider)
    set_user(short_provider, ALICE, ["kv-ops"])
    token = id_token_from_provider(
        short_provider, CLIENT_ID, browser(ALICE), client_secret=NATIVE_SECRET
    )
    time.sleep(2.5)
    with ControlPlaneClient(live_cp.url) as cp, pytest.raises(AuthenticationError) as refused:
        cp.sso_login(org, token)
    assert "expired" in refused.value.message


def test_a_removed_group_ends_access(live_cp: LiveControlPlane, provider: str) -> None:
    org = configure(live_cp, provider)
    set_user(provider, ALICE, ["kv-ops"])
    with ControlPlaneClient(live_cp.url) as cp:
        cp.sso_login(
            org,
            id_token_from_provider(
                provider, CLIENT_ID, browser(ALICE), client_secret=NATIVE_SECRET
            ),
        )
        assert cp.me()["user"]["role"] == "operator"
        earlier = cp.token
    set_user(provider, ALICE, ["unrelated"])  # removed from kv-ops at the provider
    token = id_token_from_provider(provider, CLIENT_ID, browser(ALICE), client_secret=NATIVE_SECRET)
    with ControlPlaneClient(live_cp.url) as cp, pytest.raises(AuthenticationError) as refused:
        cp.sso_login(org, token)
    assert "none of your groups" in refused.value.message
    with ControlPlaneClient(live_cp.url, earlier) as cp, pytest.raises(AuthenticationError):
        cp.me()  # the session from before ended too


def test_an_organisation_can_require_sso(live_cp: LiveControlPlane, provider: str) -> None:
    configure(live_cp, provider, require_sso=True)
    with ControlPlaneClient(live_cp.url) as cp, pytest.raises(AuthenticationError) as refused:
        cp.login(OWNER, PASSWORD)
    assert "keyvault login --sso" in refused.value.message
    with ControlPlaneClient(live_cp.url) as cp, pytest.raises(AuthenticationError) as wrong:
        cp.login(OWNER, "not the password at all")
    assert "single sign-on" not in wrong.value.message  # a wrong password reveals nothing more
