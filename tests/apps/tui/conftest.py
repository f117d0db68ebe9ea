"""Fixtures for TUI tests (shared by every screen's tests; names are stable).

* ``fake_cp`` — a deterministic :class:`tests.apps.fake_cp.FakeControlPlane` seeded with 12
  vaults (the first with 6 secrets), 3 alerts, 2 policies, 5 audit entries and 7 days of usage;
  its clock is :data:`tests.apps.fake_cp.NOW`.
* ``fake_shell`` — an :class:`apps.core.shell.Shell` over ``fake_cp`` with an in-memory
  credential store holding the fake's metadata key (names open) and a :class:`FakeStream` that
  reports "online" as soon as the shell starts (``fake_shell.stream`` can push events).
* ``fake_app`` — ``KeyVaultApp(fake_shell, clock=lambda: NOW)``: relative times are stable.
* ``stable_config`` — ``XDG_CONFIG_HOME`` at a fixed, empty path (no saved profile; the help
  screen's profile path is the same on every machine).
* ``live_shell`` — a Shell logged in to the real ``live_cp`` as its owner, token in the real
  keyring (``keyring_env``); the test starts it (``KeyVaultApp(live_shell)`` does) and the
  fixture closes it.

Helpers: ``settle(pilot)`` (workers done, screen repainted), ``texts(app, selector)`` and
``header_text(app)`` (what Static widgets show). Run an app with
``async with app.run_test(size=SIZE) as pilot``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from apps.core.keyring_store import CredentialStore
from apps.core.session import Profile, Session
from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from tests.apps.conftest import OWNER, PASSWORD, LiveControlPlane
from tests.apps.fake_cp import EMAIL, NOW, ORG_ID, FakeControlPlane

SIZE = (140, 40)
STABLE_CONFIG = "/nonexistent/keyvault-tui-tests/config"


class FakeStream:
    """Stands in for :class:`apps.core.stream.LiveStream`: online until stopped."""

    def __init__(self, shell: Shell, online: bool = True) -> None:
        self.shell = shell
        self.online = online
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        """Report the initial status, then wait until stopped."""
        self.set_online(self.online)
        await self._stopped.wait()

    async def stop(self) -> None:
        """End :meth:`run`."""
        self._stopped.set()

    def set_online(self, online: bool) -> None:
        """Pretend the stream connected or dropped."""
        self.online = online
        self.shell._on_stream_status(online)

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        """Deliver one event as the stream would."""
        self.shell.route_event(kind, data)


def fake_session(fake: FakeControlPlane) -> Session:
    """A session for the fake's organisation, its metadata key in a memory store."""
    store = CredentialStore.memory()
    store.set_metadata_key(ORG_ID, fake.key)
    profile = Profile(fake.url, EMAIL, org_id=ORG_ID, org_name="Acme", role="owner")
    return Session(profile, store, "kvs_fake")


def build_fake_shell(fake: FakeControlPlane, online: bool = True) -> Shell:
    """A Shell over ``fake`` with a :class:`FakeStream`."""
    shell = Shell(fake_session(fake), fake)  # type: ignore[arg-type]
    shell.stream = FakeStream(shell, online)  # type: ignore[assignment]
    return shell


@pytest.fixture
def stable_config(monkeypatch: pytest.MonkeyPatch) -> str:
    """No saved profile, and the same profile path on every machine."""
    monkeypatch.setenv("XDG_CONFIG_HOME", STABLE_CONFIG)
    return STABLE_CONFIG


@pytest.fixture
def fake_cp() -> FakeControlPlane:
    """A small deterministic organisation."""
    fake = FakeControlPlane()
    return fake.seed(vaults=12, secrets=6, alerts=3, policies=2, audit=5, usage_days=7)


@pytest.fixture
def fake_shell(fake_cp: FakeControlPlane, stable_config: str) -> Shell:
    """A Shell over ``fake_cp`` (started by the app)."""
    return build_fake_shell(fake_cp)


@pytest.fixture
def clock() -> Callable[[], Any]:
    """The fake's fixed "now"."""
    return lambda: NOW


@pytest.fixture
def fake_app(fake_shell: Shell, clock: Callable[[], Any]) -> KeyVaultApp:
    """The app over ``fake_shell`` with a frozen clock."""
    return KeyVaultApp(fake_shell, clock=clock)


@pytest.fixture
async def live_shell(
    live_cp: LiveControlPlane, keyring_env: dict[str, str]
) -> AsyncIterator[Shell]:
    """A Shell logged in to the real control plane (token in the real keyring)."""
    session = await asyncio.to_thread(Session.login, live_cp.url, OWNER, PASSWORD)
    shell = Shell.from_session(session)
    try:
        yield shell
    finally:
        await shell.close()


async def settle(pilot: Any) -> None:
    """Let workers finish and the screen repaint."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def texts(app: Any, selector: str) -> str:
    """The rendered text of every widget matching ``selector`` on the current screen."""
    from textual.widgets import Static

    return "\n".join(str(w.render()) for w in app.screen.query(selector) if isinstance(w, Static))


def header_text(app: Any) -> str:
    """What the header's status line and banner say right now."""
    return texts(app, "AppHeader Static")
