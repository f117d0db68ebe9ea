"""Operator-app fixtures: a real Secret Service, and real servers running in a background thread
(so the blocking CLI and client can call them from the test's own thread)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiohttp import web

from common import intents
from common.metadata_key import MetadataKey
from tests.apps.fake_cp import FakeControlPlane
from tests.apps.secret_service import MissingTool, secret_service
from tests.conftest import need_service

T = TypeVar("T")
PASSWORD = "correct horse battery staple"
OWNER = "owner@example.com"
ORG_KEY = MetadataKey(bytes(range(32)))  # the organisation's metadata key in the apps' tests


@pytest.fixture
def keyring_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A private D-Bus session bus with an unlocked GNOME Keyring, set in this test's environment.

    ``HOME``, ``XDG_DATA_HOME``, ``XDG_RUNTIME_DIR`` (0700), ``XDG_CONFIG_HOME`` point into the
    test's temp folder and ``DBUS_SESSION_BUS_ADDRESS`` at the private bus; monkeypatch restores
    them after. Both daemons are stopped at teardown. Under CI=true a missing gnome-keyring fails.
    """
    try:
        with secret_service(tmp_path / "keyring") as env:
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
            yield env
    except MissingTool as exc:
        need_service("gnome-keyring", exc)


@pytest.fixture
def no_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment with no Secret Service (a bus address that leads nowhere)."""
    home = tmp_path / "nokeyring"
    for sub in ("home", "config", "data"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={home}/no-such-bus")
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)


class LiveServer:
    """An aiohttp application served on 127.0.0.1 by an event loop in a background thread."""

    def __init__(self, app: web.Application, ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        # open operator WebSockets would hold the default 60 s shutdown; the product uses 10 s
        self.runner = web.AppRunner(app, shutdown_timeout=2)
        self.run(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        self.run(site.start())
        port = self.runner.addresses[0][1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Shut the app down (cleanup contexts included) and end the thread."""
        try:
            self.run(self.runner.cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def cp_settings(tmp_path: Path, **extra: Any) -> Any:
    """Embedded control-plane settings for tests: SQLite, fast argon2, no background sweeps."""
    from control_plane.settings import ControlPlaneSettings

    return ControlPlaneSettings.model_validate(
        {
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'cp.db'}",
            "ca_key_passphrase": "test-ca-passphrase",
            "argon2_time_cost": 1,
            "argon2_memory_kib": 64,
            "background_tasks": False,
            "login_max_failures": 3,
            "login_lockout_seconds": 60,
            "login_delay_seconds": 60,  # the first wait after 3 failures: the whole 60 s
            "gateway_port": 0,  # the agent gateway on any free port (tests run in parallel)
            **extra,
        }
    )


@dataclass
class LiveControlPlane:
    """A real control plane (embedded mode) with one organisation whose owner is ``OWNER``."""

    server: LiveServer
    org_id: str

    @property
    def url(self) -> str:
        """Its base URL."""
        return self.server.url

    @property
    def cp(self) -> Any:
        """The ControlPlane runtime object (services)."""
        from control_plane.views.context import CP

        return self.server.app[CP]

    def token(self, email: str = OWNER) -> str:
        """A fresh session token for a user."""
        resp = httpx.post(
            self.url + "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert resp.status_code == 200, resp.text
        return str(resp.json()["token"])

    def member(self, email: str, role: str) -> str:
        """Invite and accept a user of ``role``; returns their e-mail."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        inv = httpx.post(
            self.url + "/api/v1/invitations", json={"email": email, "role": role}, headers=headers
        )
        assert inv.status_code == 201, inv.text
        acc = httpx.post(
            self.url + "/api/v1/invitations/accept",
            json={"token": inv.json()["token"], "password": PASSWORD},
        )
        assert acc.status_code == 201, acc.text
        return email

    def policies(self) -> list[dict[str, object]]:
        """The policies as the real server has them (its API, the owner's session)."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        resp = httpx.get(self.url + "/api/v1/policies", headers=headers)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        docs = list(body["items"] if isinstance(body, dict) else body)
        keys = intents.IntentKeys(ORG_KEY)  # sealed ones opened, as an operator's app does
        return [{**d, **keys.open(d["intent"]).body} if d.get("sealed") else d for d in docs]

    def raise_offline_alert(self, vault_id: str) -> Any:
        """Raise a critical "db-1 is offline" alert for a vault, as the monitor does."""
        return self.server.run(
            self.cp.alerts.raise_alert(
                self.org_id,
                "vault_offline",
                f"offline:{vault_id}",
                "db-1 is offline",
                severity="critical",
                vault_id=vault_id,
            )
        )

    def enroll_vault(self, name: str = "web-1") -> str:
        """Register a vault the way an agent does (CSR + enrollment token); returns its id."""
        from common.pki import make_csr

        headers = {"Authorization": f"Bearer {self.token()}"}
        created = httpx.post(self.url + "/api/v1/enrollment-tokens", json={}, headers=headers)
        assert created.status_code == 201, created.text
        csr, _key = make_csr("agent")
        identity, _ = self.server.run(
            self.cp.vaults.register(created.json()["token"], csr.decode(), name, "0.1.0")
        )
        return str(identity["vault_id"])


def start_control_plane(
    tmp_path: Path, ssl_context: ssl.SSLContext | None = None, **extra: Any
) -> LiveControlPlane:
    """Build, start and seed a control plane (``extra`` settings); the caller stops
    ``.server``."""
    from control_plane.app import build_app

    server = LiveServer(build_app(cp_settings(tmp_path, **extra)), ssl_context)
    try:
        from control_plane.views.context import CP

        org = server.run(server.app[CP].accounts.create_org("Acme", OWNER, PASSWORD))
    except BaseException:
        server.stop()
        raise
    return LiveControlPlane(server, str(org["org_id"]))


@pytest.fixture
def live_cp(tmp_path: Path) -> Iterator[LiveControlPlane]:
    """A real control plane on a real port, in a background thread."""
    running = start_control_plane(tmp_path)
    try:
        yield running
    finally:
        running.server.stop()


# The test identity provider runs on this machine over plain HTTP: a control plane must be told
# explicitly that it may fetch from there (by default it refuses loopback and http://).
SSO_LOOPBACK = {"sso": {"allowed_networks": ["127.0.0.1/32"], "allow_plain_http": True}}


@pytest.fixture
def sso_cp(tmp_path: Path) -> Iterator[LiveControlPlane]:
    """A real control plane that may fetch from an identity provider on 127.0.0.1."""
    running = start_control_plane(tmp_path, **SSO_LOOPBACK)
    try:
        yield running
    finally:
        running.server.stop()


@pytest.fixture
def fake_cp() -> FakeControlPlane:
    """A small deterministic organisation."""
    fake = FakeControlPlane()
    return fake.seed(vaults=12, secrets=6, alerts=3, policies=2, audit=5, usage_days=7)
