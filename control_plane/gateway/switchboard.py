"""This replica's uplink sockets (one per vault) and what reaches them from elsewhere.

* **Routes** from the bus (``EventBus.route``, Redis channel ``<prefix>:uplink``): a command
  frame for a vault, an order to close its socket (revoked), or a takeover notice (the vault
  connected again, possibly on another replica). Each replica acts only on sockets it holds.
* **Organisation events**: while a vault of an organisation is connected here, the switchboard listens
  to that organisation's bus events; a ``policy.*`` event re-sends the full policy list to its
  sockets (one query per organisation, serialised so an older list never overtakes a newer
  one), and ``org.metadata_key`` closes sockets whose key no longer matches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

from common import events, intents, uplink
from common.errors import ValidationError
from control_plane.bus import Subscription
from control_plane.services.presence import VaultRef

if TYPE_CHECKING:
    from control_plane.background import Spawn
    from control_plane.bus import EventBus
    from control_plane.services.policies import Policies

log = logging.getLogger("keyvault.control_plane.gateway")


def routable(frame: dict[str, Any]) -> bool:
    """Whether a frame from the bus is a command this gateway may relay: ``{type, id, intent}``
    (or a plaintext command in the old shape), within the intent size limit. Agents verify the
    intent themselves; this only keeps other frame types and oversized ones off the route."""
    if frame.get("type") != "command" or not isinstance(frame.get("id"), str):
        return False
    if set(frame) == {"type", "id", "intent"}:
        try:
            intents.check_size(frame["intent"])
        except ValidationError:
            return False
        return True
    return set(frame) == {"type", "id", "command", "args"}


class Link(Protocol):
    """What the switchboard needs of one agent's socket (an :class:`AgentLink`)."""

    vault: VaultRef
    gen: int
    fingerprint: str | None
    finished: asyncio.Event

    def kick(self, code: int, reason: str, error: tuple[str, str] | None = None) -> None:
        """Close the socket soon with ``code`` (from another task)."""

    def refuse(self, code: str, message: str) -> None:
        """Send an ``error`` frame and close with 4403."""

    def deliver_command(self, frame: dict[str, Any]) -> None:
        """Send a command frame to the agent."""

    async def push_policies(self, policies: list[dict[str, Any]]) -> None:
        """Send the organisation's policy list again."""


class AgentSwitchboard:
    """The uplink sessions of one replica, by vault id."""

    def __init__(self, *, bus: EventBus, policies: Policies, spawn: Spawn) -> None:
        self.bus = bus
        self.policies = policies
        self.spawn = spawn
        self.closing = False
        self._sessions: dict[str, Link] = {}
        self._orgs: dict[str, tuple[Subscription, set[str]]] = {}
        self._policy_dirty: set[str] = set()
        self._policy_workers: dict[str, asyncio.Task[None]] = {}
        bus.route_handler = self.on_route

    def __len__(self) -> int:
        """How many agent sockets this replica holds."""
        return len(self._sessions)

    def session(self, vault_id: str) -> Link | None:
        """The socket of ``vault_id`` held here, if any."""
        return self._sessions.get(vault_id)

    def sessions_of(self, org_id: str) -> list[Link]:
        """The sockets held here of one organisation's vaults."""
        entry = self._orgs.get(org_id)
        if entry is None:
            return []
        return [s for v in entry[1] if (s := self._sessions.get(v)) is not None]

    async def attach(self, session: Link, *, announce: bool = True) -> None:
        """Hold ``session``: an older socket of its vault is closed with 4409, here and (via
        the bus, unless ``announce`` is False: no earlier connection can be open) on every
        other replica."""
        vault = session.vault
        older = self._sessions.get(vault.id)
        if older is not None and older.gen > session.gen:  # lost a race with a newer connect
            session.kick(uplink.CLOSE_REPLACED, "replaced")
            return
        self._sessions[vault.id] = session
        if older is not None and older is not session:
            older.kick(uplink.CLOSE_REPLACED, "replaced")
        entry = self._orgs.get(vault.org_id)
        if entry is None:
            sub = self.bus.subscribe(vault.org_id)
            sub.sink = lambda text, org=vault.org_id: self._on_org_event(org, text)
            entry = self._orgs[vault.org_id] = (sub, set())
        entry[1].add(vault.id)
        if announce:
            await self.bus.route({"vault_id": vault.id, "takeover": session.gen})

    def detach(self, session: Link) -> None:
        """Forget ``session`` (if it is still the one held for its vault)."""
        vault = session.vault
        if self._sessions.get(vault.id) is not session:
            return
        del self._sessions[vault.id]
        entry = self._orgs.get(vault.org_id)
        if entry is not None:
            entry[1].discard(vault.id)
            if not entry[1]:
                entry[0].close()
                del self._orgs[vault.org_id]

    def on_route(self, message: dict[str, Any]) -> None:
        """Act on a route from the bus if this replica holds the vault's socket."""
        session = self._sessions.get(str(message.get("vault_id")))
        if session is None:
            return
        if "frame" in message and isinstance(message["frame"], dict):
            if not routable(message["frame"]):
                log.warning("dropped a routed frame for %s that is not a command", session.vault.id)
                return
            session.deliver_command(message["frame"])
        elif "takeover" in message:
            gen = message["takeover"]
            if isinstance(gen, int) and gen > session.gen:
                session.kick(uplink.CLOSE_REPLACED, "replaced")
        elif message.get("close") == uplink.ERR_REVOKED:
            session.refuse(uplink.ERR_REVOKED, f"vault {session.vault.id} has been revoked")

    def _on_org_event(self, org_id: str, text: str) -> bool:
        try:
            event = json.loads(text)
        except ValueError:
            return True
        kind = events.KINDS.get(str(event.get("type", "")))
        if kind is not None and kind.family == "policy":
            self._policies_changed(org_id)
        elif kind is events.METADATA_KEY_CHANGED:
            fingerprint = (event.get("data") or {}).get("fingerprint")
            for session in self.sessions_of(org_id):
                if session.fingerprint != fingerprint:
                    session.refuse(
                        uplink.ERR_METADATA_KEY,
                        "the organisation's metadata key changed; give the agent the new key",
                    )
        return True

    def _policies_changed(self, org_id: str) -> None:
        self._policy_dirty.add(org_id)
        if org_id not in self._policy_workers:
            self._policy_workers[org_id] = self.spawn(
                self._push_policies(org_id), f"uplink-policies-{org_id}"
            )

    async def _push_policies(self, org_id: str) -> None:
        try:
            while org_id in self._policy_dirty:
                self._policy_dirty.discard(org_id)
                policies = await self.policies.for_uplink(org_id)
                for session in self.sessions_of(org_id):
                    await session.push_policies(policies)
        except Exception:
            log.exception("pushing policies to the uplinks of %s failed", org_id)
        finally:
            self._policy_workers.pop(org_id, None)

    async def close_all(self, timeout: float = 5.0) -> None:
        """Close every socket (1001: this replica is going away), waiting up to ``timeout``."""
        self.closing = True
        sessions = list(self._sessions.values())
        for session in sessions:
            session.kick(uplink.CLOSE_GOING_AWAY, "replica shutting down")
        if sessions:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    for session in sessions:
                        await session.finished.wait()
        for sub, _ in list(self._orgs.values()):
            sub.close()
        self._orgs.clear()
