"""Fixtures for TUI tests (shared by every screen's tests; names are stable).

* ``fake_cp`` — a deterministic :class:`tests.apps.fake_cp.FakeControlPlane` seeded with 12
  vaults (the first with 6 secrets), 3 alerts, 2 policies, 5 audit entries and 7 days of usage;
  its clock is :data:`tests.apps.fake_cp.NOW`.
* ``fake_shell`` — an :class:`apps.core.shell.Shell` over ``fake_cp`` with an in-memory
  credential store holding the fake's metadata key (names open) and a :class:`FakeStream` that
  reports "online" as soon as the shell starts (``fake_shell.stream`` can push events).
* ``fake_app`` — ``KeyVaultApp(fake_shell, clock=lambda: NOW, start="vaults")``: relative
  times are stable; it opens on the vaults (the app itself opens on Home).
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

from apps.core.session import Session
from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from tests.apps.conftest import ORG_KEY, OWNER, PASSWORD, LiveControlPlane
from tests.apps.fake_cp import NOW, FakeControlPlane
from tests.apps.fake_shell import build_fake_shell

SIZE = (140, 40)
STABLE_CONFIG = "/nonexistent/keyvault-tui-tests/config"


@pytest.fixture
def stable_config(monkeypatch: pytest.MonkeyPatch) -> str:
    """No saved profile, and the same profile path on every machine."""
    monkeypatch.setenv("XDG_CONFIG_HOME", STABLE_CONFIG)
    return STABLE_CONFIG


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
    return KeyVaultApp(fake_shell, clock=clock, start="vaults")  # the fleet screens' tests


@pytest.fixture
async def live_shell(
    live_cp: LiveControlPlane, keyring_env: dict[str, str]
) -> AsyncIterator[Shell]:
    """A Shell logged in to the real control plane (token in the real keyring)."""
    session = await asyncio.to_thread(Session.login, live_cp.url, OWNER, PASSWORD)
    session.store.set_metadata_key(live_cp.org_id, ORG_KEY)  # policies are sealed with it
    shell = Shell.from_session(session)
    try:
        yield shell
    finally:
        await shell.close()


async def settle(pilot: Any) -> None:
    """Let workers finish and the screen repaint (with steady cursors: a blinking one is on or
    off depending on when a snapshot looks)."""
    await pilot.app.workers.wait_for_complete()
    from textual.widgets import Input

    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await pilot.pause()


def texts(app: Any, selector: str) -> str:
    """The rendered text of every widget matching ``selector`` on the current screen."""
    from textual.widgets import Static

    return "\n".join(str(w.render()) for w in app.screen.query(selector) if isinstance(w, Static))


def header_text(app: Any) -> str:
    """What the header's status line and banner say right now."""
    return texts(app, "AppHeader Static")
