"""Snapshots of the operations screens over the deterministic fake control plane and agent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from apps.core.agents import AgentDirectory, AgentProfile
from apps.core.shell import Shell
from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel
from apps.core.viewmodels.usage import UsageViewModel
from apps.tui.app import KeyVaultApp
from apps.tui.screens.policy_form import PolicyFormScreen
from apps.tui.screens.secret_form import SecretFormScreen
from apps.tui.screens.secrets import SecretsScreen
from tests.apps.fake_cp import NOW, FakeControlPlane, iso
from tests.apps.tui.conftest import SIZE

SnapCompare = Callable[..., bool]
AGENT = AgentProfile(
    "billing-prod",
    "https://10.0.0.5:8443",
    "/srv/keyvault/tls/ca.crt",
    "/srv/keyvault/tls/client.crt",
    "/srv/keyvault/tls/client.key",
)
SECRETS = {
    "db/prod/password": ("hunter2-very-secret", {"env": "prod", "team": "db"}, 3),
    "api/stripe/key": ("sk_test_0000", {"env": "prod"}, 1),
    "cache/redis/password": ("r3dis!", {}, 2),
}


class FakeAgentClient:
    """A few fixed secrets, answering like ``AsyncAgentClient`` does."""

    def __init__(self) -> None:
        self.docs = {
            name: {
                "id": f"sec_{i:026d}",
                "name": name,
                "version": version,
                "labels": labels,
                "description": "",
                "updated_at": iso(NOW),
                "deleted_at": None,
            }
            for i, (name, (_, labels, version)) in enumerate(SECRETS.items())
        }
        self.deleted = {
            "old/token": {
                **self.docs["api/stripe/key"],
                "name": "old/token",
                "deleted_at": iso(NOW),
            }
        }

    async def list(self, after: str | None = None, limit: int = 100, deleted: bool = False) -> Any:
        docs = self.deleted if deleted else self.docs
        return {"secrets": [docs[k] for k in sorted(docs)], "next": None}

    async def get(self, name: str) -> Any:
        return {**self.docs[name], "value": SECRETS[name][0]}

    async def versions(self, name: str) -> Any:
        version = SECRETS[name][2]
        return {
            "versions": [
                {"version": v, "created_at": iso(NOW), "origin": "api", "current": v == version}
                for v in range(version, 0, -1)
            ]
        }

    async def aclose(self) -> None:
        return None


@pytest.fixture
def ops_app(
    fake_shell: Shell, fake_cp: FakeControlPlane, tmp_path: Path, clock: Callable[[], Any]
) -> KeyVaultApp:
    """The app over the fake, with usage on the fake's clock and two saved agents."""
    fake_shell.usage = UsageViewModel(fake_cp, today=lambda: NOW.date())
    agents = AgentDirectory(fake_shell.session.store, path=tmp_path / "agents.json")
    agents.save(AGENT, "kvt_fake")
    agents.save(AgentProfile("staging", "https://10.0.1.7:8443", "/etc/kv/ca.crt"), "kvt_fake2")
    fake_shell.agents = agents
    return KeyVaultApp(fake_shell, clock=clock)


async def settled(pilot: Pilot[None], seconds: float) -> None:
    """Let every worker finish (loads, saves), then the screen repaint: no timing races."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(seconds)
    await pilot.app.workers.wait_for_complete()
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False  # a blinking cursor is on or off depending on when we look
    await pilot.pause()


def mode(name: str, *keys: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Go to a mode, let it load, press some keys."""

    async def run(pilot: Pilot[None]) -> None:
        await pilot.app.switch_mode(name)
        await settled(pilot, 0.3)
        if keys:
            await pilot.press(*keys)
            await settled(pilot, 0.3)

    return run


def secrets_screen(*keys: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Open the fake agent's secrets and press some keys."""

    async def run(pilot: Pilot[None]) -> None:
        await pilot.app.switch_mode("secrets")
        model = AgentSecretsViewModel(AGENT, "kvt_fake", client=FakeAgentClient())
        await pilot.app.push_screen(SecretsScreen(AGENT, model))
        await settled(pilot, 0.3)
        for key in keys:
            await pilot.press(key)
            await settled(pilot, 0.2)

    return run


def test_policies(snap_compare: SnapCompare, ops_app: KeyVaultApp) -> None:
    assert snap_compare(ops_app, terminal_size=SIZE, run_before=mode("policies"))


def test_policy_form_error(snap_compare: SnapCompare, ops_app: KeyVaultApp) -> None:
    async def run(pilot: Pilot[None]) -> None:
        await mode("policies", "n")(pilot)
        assert isinstance(pilot.app.screen, PolicyFormScreen)
        pilot.app.screen.query_one("#name", Input).value = "web tokens"
        pilot.app.screen.query_one("#interval_days", Input).value = "-3"
        pilot.app.screen.query_one("#name_glob", Input).value = "web/*"
        await pilot.press("ctrl+s")
        await settled(pilot, 0.2)

    assert snap_compare(ops_app, terminal_size=SIZE, run_before=run)


def test_usage(snap_compare: SnapCompare, ops_app: KeyVaultApp) -> None:
    assert snap_compare(ops_app, terminal_size=SIZE, run_before=mode("usage", "7"))


def test_audit(snap_compare: SnapCompare, ops_app: KeyVaultApp) -> None:
    assert snap_compare(ops_app, terminal_size=SIZE, run_before=mode("audit"))


def test_enrollment_created(snap_compare: SnapCompare, ops_app: KeyVaultApp) -> None:
    async def run(pilot: Pilot[None]) -> None:
        await mode("enrollment")(pilot)
        pilot.app.screen.query_one("#description", Input).value = "billing host 2"
        await pilot.press("enter")
        await pilot.app.workers.wait_for_complete()
        await settled(pilot, 0.3)

    assert snap_compare(ops_app, terminal_size=SIZE, run_before=run)


def test_agents(snap_compare: SnapCompare, ops_app: KeyVaultApp) -> None:
    assert snap_compare(ops_app, terminal_size=SIZE, run_before=mode("secrets"))


def test_secrets_masked(snap_compare: SnapCompare, ops_app: KeyVaultApp) -> None:
    assert snap_compare(ops_app, terminal_size=SIZE, run_before=secrets_screen())


def test_secrets_revealed_with_versions(snap_compare: SnapCompare, ops_app: KeyVaultApp) -> None:
    run = secrets_screen("down", "down", "ctrl+t", "V", "D")
    assert snap_compare(ops_app, terminal_size=SIZE, run_before=run)


def test_secret_form_error(snap_compare: SnapCompare, ops_app: KeyVaultApp) -> None:
    async def run(pilot: Pilot[None]) -> None:
        await secrets_screen("n")(pilot)
        assert isinstance(pilot.app.screen, SecretFormScreen)
        pilot.app.screen.query_one("#name", Input).value = "bad name!"
        pilot.app.screen.query_one("#value", Input).value = "not shown"
        await pilot.press("ctrl+s")
        await settled(pilot, 0.2)

    assert snap_compare(ops_app, terminal_size=SIZE, run_before=run)
