"""A Shell over the in-memory FakeControlPlane with a stream the test drives: shared by the TUI
and desktop tests and the UI benchmarks."""

from __future__ import annotations

import asyncio
from typing import Any

from apps.core.keyring_store import CredentialStore
from apps.core.session import Profile, Session
from apps.core.shell import Shell
from tests.apps.fake_cp import EMAIL, ORG_ID, FakeControlPlane


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
    shell.home.clock = lambda: fake.now  # certificates age on the fake's clock
    return shell
