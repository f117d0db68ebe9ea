"""One logged-in session: its client, its view models and the live stream that keeps them fresh.

A UI builds one :class:`Shell` after login, ``await shell.start()``, hands the view models to its
screens and ``await shell.close()`` on exit. Stream events are routed to the view models here, so
every screen shows changes without reloading; after a reconnect the vaults and alerts are
reloaded, since events may have been missed while the stream was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from apps.core.labels import LabelOpener
from apps.core.names import NameBook
from apps.core.stream import LiveStream
from apps.core.viewmodels.alerts import AlertsViewModel
from apps.core.viewmodels.home import HomeViewModel
from apps.core.viewmodels.vault_detail import VaultDetailViewModel
from apps.core.viewmodels.vaults import VaultsViewModel
from common import events
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from pathlib import Path

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
        self.names = NameBook(self._vault_name)
        self.home = HomeViewModel(self.vaults, self.alerts, self.names)
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
        self._named_vaults: set[str] = set()  # vaults whose secret names were learned
        self._audit_checking = False
        self.audit.subscribe(self._audit_names)
        self.policies.subscribe(self._policy_names)
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

    def _vault_name(self, vault_id: str) -> str | None:
        row = self.vaults.row(vault_id)
        return row.name if row is not None and row.name else None

    # ------------------------------------------------------------ view models made on demand
    def metadata_key(self) -> MetadataKey | None:
        """The organisation's metadata key from the session's store (None: names stay sealed)."""
        return self._metadata_key()

    def vault_detail(self, vault_id: str) -> VaultDetailViewModel:
        """A view model for one vault, fed by the stream for as long as it is referenced."""
        opener = LabelOpener(self.metadata_key(), vault_id)
        model = VaultDetailViewModel(self.client, vault_id, opener)
        model.subscribe(functools.partial(self._learn_names, model))
        self._details.add(model)
        return model

    def _learn_names(self, model: VaultDetailViewModel, _state: Any = None) -> None:
        for row in model.state.items:
            if not row.sealed:
                self.names.learn_inventory(
                    model.vault_id, [{"secret_id": row.secret_id}], _Named(row.name)
                )

    async def _check_audit(self) -> None:
        try:
            await self.audit.check_newer()
        finally:
            self._audit_checking = False

    async def _learn_me(self) -> None:
        """The operator's own user id reads as their e-mail (audit actor, commands)."""
        try:
            me = await self.client.me()
        except KeyVaultError:
            return
        user = me.get("user") or {}
        if isinstance(user.get("id"), str):
            self.names.learn(user["id"], str(user.get("email") or ""))

    def _policy_names(self, state: Any) -> None:
        """Policy ids (audit targets, inventory, scopes) read as the policies' names."""
        for row in getattr(state, "rows", ()):
            self.names.learn(str(row.id), str(getattr(row, "name", "") or ""))

    def _audit_names(self, state: Any) -> None:
        """Audit rows name secrets by id: open each reporting vault's labels once."""
        for row in state.rows:
            if row.vault_id and row.vault_id not in self._named_vaults:
                self._named_vaults.add(row.vault_id)
                self._spawn(self.learn_secret_names(row.vault_id))

    async def learn_secret_names(self, vault_id: str) -> None:
        """Open one vault's inventory labels so its secret ids show as names (errors ignored)."""
        opener = LabelOpener(self.metadata_key(), vault_id)
        if not opener.has_key:
            return
        try:
            items = [d async for d in self.client.iter_inventory(vault_id)]
        except KeyVaultError:
            return
        self.names.learn_inventory(vault_id, items, opener)
        self.audit.renamed()  # rows shown with the secrets' ids now read with their names

    # ------------------------------------------------------------ the metadata key
    async def import_metadata_key(self, path: Path) -> MetadataKey:
        """Import the organisation's key file; names appear at once in every open view."""
        from apps.core.metadata_keys import import_key

        key = await import_key(self.session, self.client, path)
        await self._key_installed(key)
        return key

    async def create_metadata_key(self, out: Path, *, replace: bool = False) -> MetadataKey:
        """Create the organisation's key (owner), write the agents' key file ``out``."""
        from apps.core.metadata_keys import create_key

        key = await create_key(self.session, self.client, out, replace=replace)
        await self._key_installed(key)
        return key

    async def _key_installed(self, key: MetadataKey) -> None:
        from apps.core.metadata_keys import DEFAULT_KEY_FILE

        self.enrollment.key_file = DEFAULT_KEY_FILE
        self.names.forget_secrets()
        details = list(self._details)
        for detail in details:
            detail.opener = LabelOpener(key, detail.vault_id)
        await asyncio.gather(*(d.refresh() for d in details))
        self.home.rebuild()

    def agent_secrets(self, agent: AgentProfile) -> AgentSecretsViewModel:
        """A view model for the secrets on one agent (its token from the keyring)."""
        from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel

        model = AgentSecretsViewModel(agent, self.agents.token(agent))
        self._agent_models.add(model)  # closed with the shell if its screen did not close it
        model.learn_tokens = self._learn_tokens
        return model

    def _learn_tokens(self, names: dict[str, str]) -> None:
        """An agent's token names, so its audit entries name the workload."""
        for token_id, name in names.items():
            self.names.learn(token_id, name)
        if names:
            self.audit.renamed()

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
        if self.audit.live and not self._audit_checking:  # activity: the log has grown
            self._audit_checking = True
            self._spawn(self._check_audit())
        if known.family == "vault":
            self.vaults.apply_event(kind, data)
        elif known.family == "alert":
            self.alerts.apply_event(kind, data)
        elif known.family == "policy":
            self.policies.apply_event(kind, data)
        elif known.family == "user":
            self._spawn(self.users.refresh())  # ids only: reload the list
        if self.enrollment.needs(kind, data):
            self._spawn(self.enrollment.on_event(kind, data))
        if known is events.VAULT_STATUS and isinstance(data.get("vault_id"), str):
            self._status_changed(data["vault_id"], str(data.get("status") or ""))
        if known.family == "vault" or known is events.COMMAND_RESULT:
            for detail in list(self._details):
                detail.apply_event(kind, data)
        elif known is events.INVENTORY_CHANGED:
            self.vaults.apply_event(kind, data)
            # the event says only which vault changed; open detail views reload its inventory
            for detail in list(self._details):
                if detail.vault_id == data.get("vault_id"):
                    self._spawn(detail.refresh())

    def _status_changed(self, vault_id: str, status: str) -> None:
        """Online: the control plane resolved the vault's offline alert, so reload the alerts
        (a missed ``alert.resolved`` cannot leave it open here). Offline: reload the vault for
        its true last heartbeat (the event does not carry it)."""
        if status == "online":
            self._spawn(self.alerts.refresh())
        elif status == "offline":
            self._spawn(self.vaults.reload_last_seen(vault_id))

    # ------------------------------------------------------------ lifecycle
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload(self) -> None:
        await asyncio.gather(self.vaults.refresh(), self.alerts.refresh())

    async def start(self) -> None:
        """Start the live stream and load the vaults and alerts."""
        from apps.core.metadata_keys import DEFAULT_KEY_FILE

        if await asyncio.to_thread(self.metadata_key) is not None:
            self.enrollment.key_file = DEFAULT_KEY_FILE  # the enroll command installs it
        self._spawn(self._learn_me())
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


class _Named:
    """An opener for a name already opened by a view model (no key needed again)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def open(self, item: dict[str, Any]) -> Any:
        """The already-open label of ``item``."""
        from apps.core.labels import OpenedLabel

        return OpenedLabel(str(item["secret_id"]), "open", name=self.name)
