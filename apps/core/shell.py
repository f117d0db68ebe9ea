"""One logged-in session: its client, its view models and the live stream that keeps them fresh.

A UI builds one :class:`Shell` after login, ``await shell.start()``, hands the view models to its
screens and ``await shell.close()`` on exit. Stream events are routed to the view models here, so
every screen shows changes without reloading; after a reconnect the vaults and alerts are
reloaded, since events may have been missed while the stream was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from apps.core.labels import LabelOpener
from apps.core.stream import LiveStream
from apps.core.viewmodels.alerts import AlertsViewModel
from apps.core.viewmodels.vault_detail import VaultDetailViewModel
from apps.core.viewmodels.vaults import VaultsViewModel
from common import events
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.agents import AgentDirectory, AgentProfile
    from apps.core.session import Session
    from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel
    from apps.core.viewmodels.audit import AuditViewModel
    from apps.core.viewmodels.enrollment import EnrollmentViewModel
    from apps.core.viewmodels.policies import PoliciesViewModel
    from apps.core.viewmodels.usage import UsageViewModel
    from apps.core.viewmodels.users import UsersViewModel
    from common.cpclient import AsyncControlPlaneClient
    from common.metadata_key import MetadataKey

StatusListener = Callable[[bool], None]


class Shell:
    """A session's clients, view models and live stream."""

    def __init__(self, session: Session, client: AsyncControlPlaneClient) -> None:
        from apps.core.agents import AgentDirectory
        from apps.core.viewmodels.audit import AuditViewModel
        from apps.core.viewmodels.enrollment import EnrollmentViewModel
        from apps.core.viewmodels.policies import PoliciesViewModel
        from apps.core.viewmodels.usage import UsageViewModel
        from apps.core.viewmodels.users import UsersViewModel

        self.session = session
        self.client = client
        self.vaults = VaultsViewModel(client)
        self.alerts = AlertsViewModel(client)
        self.policies: PoliciesViewModel = PoliciesViewModel(client, key_source=self._metadata_key)
        self.usage: UsageViewModel = UsageViewModel(client)
        self.audit: AuditViewModel = AuditViewModel(client)
        self.enrollment: EnrollmentViewModel = EnrollmentViewModel(
            client, session.profile.gateway_url
        )
        self.users: UsersViewModel = UsersViewModel(
            client, my_email=session.profile.email, my_role=session.profile.role
        )
        self.agents: AgentDirectory = AgentDirectory(session.store)
        self.online = False
        self.stream = LiveStream(
            session.profile.control_plane_url,
            session.token,
            ca_file=session.profile.ca_file,
            pin=session.profile.ca_pin,
            on_event=self.route_event,
            on_status=self._on_stream_status,
        )
        self._details: weakref.WeakSet[VaultDetailViewModel] = weakref.WeakSet()
        self._agent_models: weakref.WeakSet[AgentSecretsViewModel] = weakref.WeakSet()
        self._status_listeners: list[StatusListener] = []
        self._stream_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._was_online = False

    @classmethod
    def from_session(cls, session: Session) -> Shell:
        """A shell over a logged-in session, with one asyncio client for the whole app."""
        return cls(session, session.async_client())

    def _metadata_key(self) -> MetadataKey | None:
        """The organisation's metadata key from the keyring (None without a usable one)."""
        try:
            return self.session.metadata_key()
        except KeyVaultError:
            return None

    def __repr__(self) -> str:
        return f"Shell(url={self.session.profile.control_plane_url!r}, online={self.online})"

    # ------------------------------------------------------------ view models made on demand
    def vault_detail(self, vault_id: str) -> VaultDetailViewModel:
        """A view model for one vault, fed by the stream for as long as it is referenced."""
        try:
            key = self.session.metadata_key()
        except KeyVaultError:
            key = None  # no usable keyring: names stay sealed
        model = VaultDetailViewModel(self.client, vault_id, LabelOpener(key, vault_id))
        self._details.add(model)
        return model

    def agent_secrets(self, agent: AgentProfile) -> AgentSecretsViewModel:
        """A view model for the secrets on one agent (its token from the keyring)."""
        from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel

        model = AgentSecretsViewModel(agent, self.agents.token(agent))
        self._agent_models.add(model)  # closed with the shell if its screen did not close it
        return model

    # ------------------------------------------------------------ live status
    def on_status(self, listener: StatusListener) -> Callable[[], None]:
        """Call ``listener(online)`` when the live stream connects or drops; returns unsubscribe."""
        self._status_listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._status_listeners:
                self._status_listeners.remove(listener)

        return unsubscribe

    def _on_stream_status(self, online: bool) -> None:
        self.online = online
        if online:
            if self._was_online:  # a reconnect: events may have been missed
                self._spawn(self._reload())
            self._was_online = True
        for listener in list(self._status_listeners):
            listener(online)

    def route_event(self, kind: str, data: dict[str, Any]) -> None:
        """Hand one stream event to the view models it concerns."""
        known = events.KINDS.get(kind)
        if known is None:
            return
        if known.family == "vault":
            self.vaults.apply_event(kind, data)
        elif known.family == "alert":
            self.alerts.apply_event(kind, data)
        elif known.family == "policy":
            self.policies.apply_event(kind, data)
        elif known.family == "user":
            self._spawn(self.users.refresh())  # ids only: reload the list
        if known.family == "vault" or known is events.COMMAND_RESULT:
            for detail in list(self._details):
                detail.apply_event(kind, data)
        elif known is events.INVENTORY_CHANGED:
            self.vaults.apply_event(kind, data)
            # the event says only which vault changed; open detail views reload its inventory
            for detail in list(self._details):
                if detail.vault_id == data.get("vault_id"):
                    self._spawn(detail.refresh())

    # ------------------------------------------------------------ lifecycle
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload(self) -> None:
        await asyncio.gather(self.vaults.refresh(), self.alerts.refresh())

    async def start(self) -> None:
        """Start the live stream and load the vaults and alerts."""
        if self._stream_task is None:
            self._stream_task = asyncio.get_running_loop().create_task(
                self.stream.run(), name="keyvault-live-stream"
            )
        await self._reload()

    async def close(self) -> None:
        """Stop the stream and background reloads, and close the HTTP client."""
        await self.stream.stop()
        task, self._stream_task = self._stream_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pending in list(self._tasks):
            pending.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for model in list(self._agent_models):
            await model.close()
        await self.client.aclose()

    async def logout(self) -> bool:
        """Revoke the session and forget its token, then close; False if the control plane was
        unreachable (the token is forgotten locally anyway)."""
        revoked = await asyncio.to_thread(self.session.logout)
        await self.close()
        return revoked
