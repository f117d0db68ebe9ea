"""Single sign-on end to end against a real OpenID provider started by the test
(``oidc-provider-mock``): the CLI and the login view model, a wrong audience, an expired token,
a removed group, an organisation that requires SSO, and the control plane's own nonce check
(a token not issued for the login it started, or replayed, is refused). The browser step is driven by the test:
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
from common.errors import AuthenticationError, ValidationError
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


def token_for(sso_cp: LiveControlPlane, org: str, issuer: str, email: str, **kw: Any) -> Any:
    """Start a login at the control plane and run the provider's flow with its nonce:
    (login id, ID token)."""
    with ControlPlaneClient(sso_cp.url) as cp:
        login = cp.sso_start(org)
    kw.setdefault("client_secret", NATIVE_SECRET)
    kw.setdefault("nonce", login["nonce"])
    client_id = kw.pop("client_id", CLIENT_ID)
    return login["login_id"], id_token_from_provider(issuer, client_id, browser(email), **kw)


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
    sso_cp: LiveControlPlane,
    provider: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    org = configure(sso_cp, provider)
    set_user(provider, ALICE, ["kv-ops", "unrelated"])
    monkeypatch.setattr("webbrowser.open", browser(ALICE))
    result = CliRunner().invoke(
        cli, ["login", "--control-plane", sso_cp.url, "--sso", org], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert f"as {ALICE} (operator" in result.stdout and "via SSO" in result.stdout
    assert "sign in at: http://127.0.0.1" in result.stderr
    token = CredentialStore().get_session_token(sso_cp.url, ALICE)
    with ControlPlaneClient(sso_cp.url, token) as cp:
        assert cp.me()["user"] == {"id": cp.me()["user"]["id"], "email": ALICE, "role": "operator"}


async def test_the_apps_login_view_model_signs_in_with_sso(
    sso_cp: LiveControlPlane, provider: str
) -> None:
    org = configure(sso_cp, provider)
    set_user(provider, "bob@example.com", ["kv-admins"])
    vm = LoginViewModel()
    session = await vm.login_sso(
        sso_cp.url, org, browser("bob@example.com"), store=CredentialStore.memory()
    )
    assert session.profile.role == "admin" and vm.state.email == "bob@example.com"
    assert vm.state.error is None and not vm.state.busy


def test_a_token_for_another_audience_is_refused(sso_cp: LiveControlPlane, provider: str) -> None:
    org = configure(sso_cp, provider)
    set_user(provider, ALICE, ["kv-ops"])
    login, token = token_for(sso_cp, org, provider, ALICE, client_id="some-other-app")
    with ControlPlaneClient(sso_cp.url) as cp, pytest.raises(AuthenticationError) as refused:
        cp.sso_login(org, token, login)
    assert "issued to another application" in refused.value.message


def test_an_expired_token_is_refused(sso_cp: LiveControlPlane, short_provider: str) -> None:
    org = configure(sso_cp, short_provider)
    set_user(short_provider, ALICE, ["kv-ops"])
    login, token = token_for(sso_cp, org, short_provider, ALICE)
    time.sleep(2.5)
    with ControlPlaneClient(sso_cp.url) as cp, pytest.raises(AuthenticationError) as refused:
        cp.sso_login(org, token, login)
    assert "expired" in refused.value.message


def test_a_removed_group_ends_access(sso_cp: LiveControlPlane, provider: str) -> None:
    org = configure(sso_cp, provider)
    set_user(provider, ALICE, ["kv-ops"])
    with ControlPlaneClient(sso_cp.url) as cp:
        login, token = token_for(sso_cp, org, provider, ALICE)
        cp.sso_login(org, token, login)
        assert cp.me()["user"]["role"] == "operator"
        earlier = cp.token
    set_user(provider, ALICE, ["unrelated"])  # removed from kv-ops at the provider
    login, token = token_for(sso_cp, org, provider, ALICE)
    with ControlPlaneClient(sso_cp.url) as cp, pytest.raises(AuthenticationError) as refused:
        cp.sso_login(org, token, login)
    assert "none of your groups" in refused.value.message
    with ControlPlaneClient(sso_cp.url, earlier) as cp, pytest.raises(AuthenticationError):
        cp.me()  # the session from before ended too


def test_an_organisation_can_require_sso(sso_cp: LiveControlPlane, provider: str) -> None:
    configure(sso_cp, provider, require_sso=True)
    with ControlPlaneClient(sso_cp.url) as cp, pytest.raises(AuthenticationError) as refused:
        cp.login(OWNER, PASSWORD)
    assert "keyvault login --sso" in refused.value.message
    with ControlPlaneClient(sso_cp.url) as cp, pytest.raises(AuthenticationError) as wrong:
        cp.login(OWNER, "not the password at all")
    assert "single sign-on" not in wrong.value.message  # a wrong password reveals nothing more


def test_a_token_with_another_nonce_is_refused_by_the_control_plane(
    sso_cp: LiveControlPlane, provider: str
) -> None:
    """An ID token the provider issued for another sign-in (its own nonce, e.g. one an app or
    an attacker started elsewhere) does not complete a login the control plane started."""
    org = configure(sso_cp, provider)
    set_user(provider, ALICE, ["kv-ops"])
    _, foreign = token_for(sso_cp, org, provider, ALICE, nonce="a nonce we never issued")
    with ControlPlaneClient(sso_cp.url) as cp:
        login = cp.sso_start(org)["login_id"]
        with pytest.raises(AuthenticationError) as refused:
            cp.sso_login(org, foreign, login)
        assert "not issued for this sign-in (nonce)" in refused.value.message
        with pytest.raises(AuthenticationError) as again:  # the refused login is used up too
            cp.sso_login(org, foreign, login)
        assert "already used or has expired" in again.value.message


def test_a_replayed_token_is_refused_by_the_control_plane(
    sso_cp: LiveControlPlane, provider: str
) -> None:
    """The login id and its nonce are single-use: the same token and login id a second time
    (a replay), or the token with a fresh login of the control plane, get a 401."""
    org = configure(sso_cp, provider)
    set_user(provider, ALICE, ["kv-ops"])
    login, token = token_for(sso_cp, org, provider, ALICE)
    with ControlPlaneClient(sso_cp.url) as cp:
        cp.sso_login(org, token, login)
        assert cp.me()["user"]["email"] == ALICE
    body = {"org_id": org, "id_token": token, "login_id": login}
    replay = httpx.post(f"{sso_cp.url}/api/v1/auth/sso", json=body)
    assert replay.status_code == 401, replay.text
    assert replay.json()["error"]["code"] == "unauthenticated"
    assert "already used or has expired" in replay.json()["error"]["message"]
    with ControlPlaneClient(sso_cp.url) as cp:
        fresh = cp.sso_start(org)["login_id"]
    replay = httpx.post(f"{sso_cp.url}/api/v1/auth/sso", json={**body, "login_id": fresh})
    assert replay.status_code == 401, replay.text
    assert "nonce" in replay.json()["error"]["message"]


def test_a_login_without_a_started_login_is_refused(sso_cp: LiveControlPlane) -> None:
    """Old apps that do not start the login get a clear 400 naming the missing field."""
    answer = httpx.post(
        f"{sso_cp.url}/api/v1/auth/sso", json={"org_id": sso_cp.org_id, "id_token": "x.y.z"}
    )
    assert answer.status_code == 400, answer.text
    assert "login_id" in answer.json()["error"]["message"]


def test_the_provider_on_loopback_is_refused_without_the_allow_list(
    live_cp: LiveControlPlane, provider: str
) -> None:
    """With default settings the control plane refuses to trust (and so to fetch from) the
    provider on 127.0.0.1, and says which setting would allow it."""
    with ControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        with pytest.raises(ValidationError) as refused:
            cp.set_sso({"issuer": provider, "client_id": CLIENT_ID, "role_map": {"a": "admin"}})
    assert "resolves to 127.0.0.1, a loopback address" in refused.value.message
    assert "sso.allowed_networks" in refused.value.message


@pytest.fixture
def hostile_provider() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 whose discovery document points its JWKS at the cloud
    metadata address; yields its issuer URL."""
    import http.server
    import json
    import threading

    class Discovery(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"jwks_uri": "http://169.254.169.254/latest/meta-data/"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Discovery)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_jwks_uri_at_an_internal_address_is_not_fetched(
    sso_cp: LiveControlPlane, hostile_provider: str
) -> None:
    """The provider (allowed) names an internal JWKS address: the login gets a clear 503
    naming the address and the setting, never a 500, and nothing is fetched from there."""
    org = configure(sso_cp, hostile_provider)
    with ControlPlaneClient(sso_cp.url) as cp:
        login = cp.sso_start(org)["login_id"]
    body = {"org_id": org, "id_token": "e30.e30.e30", "login_id": login}
    answer = httpx.post(f"{sso_cp.url}/api/v1/auth/sso", json=body)
    assert answer.status_code == 503, answer.text
    message = answer.json()["error"]["message"]
    assert "169.254.169.254, a link-local address" in message
    assert "sso.allowed_networks" in message


def test_started_logins_are_bounded_per_address(sso_cp: LiveControlPlane) -> None:
    """Starting a login needs no session, so one address may hold only 20 open ones (then a
    clear 429); an unknown organisation is a 404 and records nothing."""
    org = configure(sso_cp, "http://127.0.0.1:9")
    unknown = httpx.post(f"{sso_cp.url}/api/v1/auth/sso/org_nope/start")
    assert unknown.status_code == 404, unknown.text
    with httpx.Client(base_url=sso_cp.url) as http:
        started = [http.post(f"/api/v1/auth/sso/{org}/start") for _ in range(20)]
        assert [r.status_code for r in started] == [200] * 20
        assert len({r.json()["nonce"] for r in started}) == 20  # a fresh nonce each time
        over = http.post(f"/api/v1/auth/sso/{org}/start")
    assert over.status_code == 429, over.text
    assert "single sign-ins from this address are still open" in over.json()["error"]["message"]
