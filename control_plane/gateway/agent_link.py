"""One agent's uplink WebSocket, from ``hello`` to close (``docs/uplink.md``).

The agent speaks first (``hello`` within 10 s); the session checks it, records the connection,
sends ``welcome``, the policies and every unfinished command, then serves heartbeats, event
batches and renewals until the socket closes. A malformed frame gets an ``error`` frame and
close 4400; a refusal (wrong vault, metadata-key mismatch, revoked) error + 4403; a newer
connection of the same vault closes this one with 4409. Nothing an agent sends can crash it.

When a connection ends, its replica schedules the offline check for the moment the vault's
last heartbeat becomes too old; if the vault has not reconnected anywhere by then, it raises
"vault offline" (the periodic sweep remains the backstop for a replica that died).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from common import uplink
from common.errors import ValidationError
from control_plane.db import Batcher, iso
from control_plane.errors import UplinkRefusedError
from control_plane.gateway import frames
from control_plane.services.policies import applies_to
from control_plane.services.presence import VaultPresence, VaultRef

if TYPE_CHECKING:
    from control_plane.background import Clock, Spawn
    from control_plane.gateway.switchboard import AgentSwitchboard
    from control_plane.metrics import Metrics
    from control_plane.services.alerts import Alerts
    from control_plane.services.commands import Commands
    from control_plane.services.ingest import Ingest
    from control_plane.services.policies import Policies
    from control_plane.settings import ControlPlaneSettings

log = logging.getLogger("keyvault.control_plane.gateway")
HELLO_TIMEOUT = 10.0
CLOSE_INTERNAL = 1011
_GONE = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


@dataclass(frozen=True)
class LinkServices:
    """What every agent link uses, built once per gateway."""

    settings: ControlPlaneSettings
    clock: Clock
    spawn: Spawn
    metrics: Metrics
    presence: VaultPresence
    policies: Policies
    commands: Commands
    ingest: Ingest
    alerts: Alerts
    # the connect sequence's reads, shared by the agents connecting at the same time
    # (control_plane.db.Batcher): an organisation's policies, a vault's unfinished commands
    org_policies: Batcher[str, None, list[dict[str, Any]]]
    unfinished: Batcher[str, None, list[dict[str, Any]]]


class _Replaced(Exception):
    """A newer connection of this vault took over."""


class AgentLink:
    """The protocol state of one uplink socket."""

    __slots__ = (
        "_audit_floor",
        "_backlog",
        "_chain_floors",
        "_heartbeats",
        "_idle",
        "_last_heartbeat",
        "_policies_stale",
        "_sent",
        "_stop",
        "_task",
        "fingerprint",
        "finished",
        "gen",
        "ready",
        "services",
        "switchboard",
        "vault",
        "ws",
    )

    def __init__(
        self,
        services: LinkServices,
        switchboard: AgentSwitchboard,
        ws: web.WebSocketResponse,
        vault: VaultRef,
    ) -> None:
        self.services = services
        self.switchboard = switchboard
        self.ws = ws
        self.vault = vault
        self.gen = 0
        self.fingerprint: str | None = None
        self.ready = False
        self._backlog: list[dict[str, Any]] = []
        self._sent: set[str] = set()
        self._policies_stale = False
        self._heartbeats = 0
        self._audit_floor = (1, 0)  # the vault's audit head as known here: (epoch, seq)
        # worker chains' heads as reported here (``workers: N`` agents only; None until then)
        self._chain_floors: dict[int, tuple[int, int]] | None = None
        self._last_heartbeat: datetime = services.clock()
        # a close asked for by another task (switchboard): (code, reason, error frame)
        self._stop: tuple[int, str, tuple[str, str] | None] | None = None
        self._task: asyncio.Task[Any] | None = None  # the task serving the socket
        self._idle = False  # that task is waiting in receive() (and may be interrupted there)
        self.finished = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Serve the socket until it closes; never raises."""
        self._task = asyncio.current_task()
        try:
            await self._start()
            await self._serve()
        except UplinkRefusedError as exc:
            await self.close(uplink.CLOSE_REFUSED, exc.code, error=(exc.code, exc.message))
            with contextlib.suppress(Exception):  # the refusal stands even if this fails
                await self.services.presence.refused(self.vault, exc.code, exc.message)
        except ValidationError as exc:
            self.services.metrics.uplink_frames_refused += 1
            await self.close(
                uplink.CLOSE_PROTOCOL, uplink.ERR_PROTOCOL, error=(uplink.ERR_PROTOCOL, exc.message)
            )
        except _Replaced:
            await self.close(uplink.CLOSE_REPLACED, "replaced")
        except ConnectionError:
            pass
        except Exception:
            log.exception("uplink of %s failed", self.vault.id)
            await self.close(CLOSE_INTERNAL, "internal error")
        finally:
            await self._finish()
            self.finished.set()

    async def _start(self) -> None:
        try:
            msg = await self.ws.receive(timeout=HELLO_TIMEOUT)
        except TimeoutError:
            raise ValidationError(f"no hello within {HELLO_TIMEOUT:g} s") from None
        frame = self._decode(msg)
        if frame is None:
            raise ConnectionResetError("closed before hello")
        if frame["type"] != "hello":
            raise ValidationError("the first frame must be hello")
        hello = frames.parse_hello(frame)
        if hello.vault_id != self.vault.id:
            raise UplinkRefusedError(
                uplink.ERR_UNKNOWN_VAULT, "hello.vault_id is not the client certificate's name"
            )
        registered = self.vault.key_fingerprint  # read with the vault's row at the upgrade
        if hello.metadata_key_fingerprint != registered:
            raise UplinkRefusedError(uplink.ERR_METADATA_KEY, _mismatch(registered, hello))
        self.fingerprint = hello.metadata_key_fingerprint
        connected = await self.services.presence.connect(self.vault, hello.agent_version)
        self.gen, self._audit_floor = connected.gen, connected.audit_head
        self._last_heartbeat = self.services.clock()
        await self.switchboard.attach(self, announce=connected.earlier_open)
        interval = self.services.settings.uplink_heartbeat_seconds
        await self._send(
            {
                "type": "welcome",
                "protocol": uplink.PROTOCOL,
                "vault_id": self.vault.id,
                "server_time": iso(self.services.clock()),
                "heartbeat_interval_seconds": int(interval) if interval.is_integer() else interval,
                # worker audit chains 1..N are stored (an older agent ignores this field)
                "audit_chains": uplink.MAX_AUDIT_CHAIN,
            }
        )
        await self._send_policies(await self.services.org_policies(self.vault.org_id, None) or [])
        pending = await self.services.unfinished(self.vault.id, None) or []
        for frame in pending:
            self._sent.add(frame["id"])
            await self._send(frame)
        await self.services.commands.mark_sent([f["id"] for f in pending])
        self.ready = True
        if self._policies_stale:
            await self._send_policies(await self.services.policies.for_uplink(self.vault.org_id))
        backlog, self._backlog = self._backlog, []
        for frame in backlog:
            await self._send_command(frame)

    async def _receive(self) -> Any:
        """The next message, or None once another task asked this session to close.

        Only this task ever closes the socket: aiohttp drops the connection without the close
        handshake when ``close()`` runs while another task waits in ``receive()``. So
        :meth:`kick` interrupts this task only while it waits here (a cancellation, taken
        back below), and the session then closes the socket itself. No helper task or
        future per connection or per message.
        """
        if self._stop is not None:
            return None
        self._idle = True
        try:
            return await self.ws.receive()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stop is None or task is None or task.uncancel() > 0:
                raise  # cancelled from elsewhere (shutdown), not by kick()
            return None
        finally:
            self._idle = False

    async def _serve(self) -> None:
        while True:
            msg = await self._receive()
            if msg is None:
                assert self._stop is not None
                code, reason, error = self._stop
                await self.close(code, reason, error=error)
                return
            frame = self._decode(msg)
            if frame is None:
                return
            kind = frame["type"]
            if kind == "heartbeat":
                await self._heartbeat(frames.parse_heartbeat(frame))
            elif kind == "events":
                stream, events = frames.parse_events(frame)
                done = await self.services.ingest.batch(self.vault, events)
                self._audit_floor = max(self._audit_floor, done.get("head", self._audit_floor))
                await self._send({"type": "ack", "stream": stream, "upto": events[-1].seq})
            elif kind == "renew":
                await self._renew(frames.parse_renew(frame))
            else:
                raise ValidationError(f"{kind} may only be the first frame")

    async def _finish(self) -> None:
        self.switchboard.detach(self)
        if not self.gen:
            return
        try:
            current = await self.services.presence.disconnect(self.vault.id, self.gen)
        except Exception:
            log.exception("recording the disconnect of %s failed", self.vault.id)
            return
        if current and not self.switchboard.closing:
            self.services.spawn(self._offline_check(), f"offline-check-{self.vault.id}")

    async def _offline_check(self) -> None:
        await asyncio.sleep(self.services.presence.offline_deadline(self._last_heartbeat))
        try:
            await self.services.presence.check_offline(self.vault, self.gen)
        except Exception:
            log.exception("offline check of %s failed; the sweep will catch it", self.vault.id)

    # ------------------------------------------------------------------ frames
    def _decode(self, msg: Any) -> dict[str, Any] | None:
        if msg.type in _GONE:
            return None
        if msg.type != WSMsgType.TEXT:
            raise ValidationError("frames must be JSON text messages")
        try:
            return uplink.decode(msg.data, uplink.AGENT_TYPES)
        except RecursionError:
            raise ValidationError("frame is nested too deeply") from None

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_str(uplink.encode(frame))

    async def _heartbeat(self, health: dict[str, Any]) -> None:
        started = time.perf_counter()
        current, offline_alert = await self.services.presence.beat(self.vault.id, self.gen, health)
        if not current:
            if await self.services.presence.why_stale(self.vault.id) == uplink.ERR_REVOKED:
                raise UplinkRefusedError(
                    uplink.ERR_REVOKED, f"vault {self.vault.id} has been revoked"
                )
            raise _Replaced
        now = self.services.clock()
        limit = timedelta(seconds=self.services.settings.offline_after_seconds)
        if now - self._last_heartbeat > limit:  # it was offline: say it is back
            await self.services.presence.came_back(self.vault)
        elif self._heartbeats == 0 and offline_alert:  # raised while it was connecting
            await self.services.alerts.resolve_key(
                self.vault.org_id, f"vault_offline:{self.vault.id}"
            )
        self._heartbeats += 1
        self._last_heartbeat = now
        if health.get("audit_head"):
            self._audit_floor = await self._check_head(health["audit_head"], self._audit_floor)
        if health.get("audit_chains"):
            await self._check_chain_heads(health["audit_chains"])
        self.services.metrics.observe_heartbeat(time.perf_counter() - started)

    async def _check_head(
        self, head: dict[str, Any], floor: tuple[int, int], chain: int = 0
    ) -> tuple[int, int]:
        """Alert when a reported audit head is behind ``floor`` (what this vault's chain already
        reported or shipped) or starts a new epoch; returns the chain's mark from now on."""
        heads = self.services.ingest.heads
        finding = heads.check_heartbeat(self.vault, floor, head, chain)
        if finding is not None:
            await heads.raise_all(self.vault, [finding])
            return floor
        reported = (int(head.get("epoch") or 1), int(head["seq"]))
        if reported[0] > floor[0]:  # a new chain, even before its first entry
            await heads.raise_all(
                self.vault, [heads.restarted(self.vault, floor, reported[0], chain)]
            )
        return max(floor, reported)

    async def _check_chain_heads(self, reported: list[dict[str, Any]]) -> None:
        """Each worker chain's head (``workers: N``) checked as chain 0's is, against the
        higher of its stored head and what earlier heartbeats on this socket reported."""
        stored = await self.services.ingest.heads.chain_heads(self.vault.id)
        floors = self._chain_floors = self._chain_floors or {}
        for head in reported:
            k = int(head["chain"])
            floor = max(stored.get(k, (1, 0)), floors.get(k, (1, 0)))
            floors[k] = await self._check_head(head, floor, k)

    async def _renew(self, csr: str) -> None:
        try:
            cert, ca = await self.services.presence.renew(self.vault, csr)
        except ValidationError as exc:
            await self._send(uplink.error_frame(uplink.ERR_RENEWAL, exc.message))
            return
        await self._send({"type": "certificate", "certificate": cert, "ca_certificate": ca})
        overlap = self.services.settings.cert_overlap_seconds
        self.services.spawn(self._retire(overlap), f"uplink-retire-{self.vault.id}")

    async def _retire(self, after: float) -> None:
        """End this socket when the certificate it was opened with stops being accepted (the
        overlap after its renewal): the agent reconnects with the new one."""
        await asyncio.sleep(after)
        self.kick(uplink.CLOSE_REPLACED, "certificate renewed")

    async def _send_policies(self, policies: list[dict[str, Any]]) -> None:
        mine = [p for p in policies if applies_to(p, self.vault.id)]
        await self._send({"type": "policies", "policies": mine})

    # ------------------------------------------------------------------ from the switchboard
    async def push_policies(self, policies: list[dict[str, Any]]) -> None:
        """Send the organisation's changed policy list (or remember to, once ready)."""
        if not self.ready:
            self._policies_stale = True
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._send_policies(policies)

    def deliver_command(self, frame: dict[str, Any]) -> None:
        """A command routed here: send it now, or after the connect sequence."""
        if not self.ready:
            self._backlog.append(frame)
            return
        self.services.spawn(self._send_command(frame), f"uplink-command-{self.vault.id}")

    async def _send_command(self, frame: dict[str, Any]) -> None:
        command_id = str(frame.get("id"))
        if command_id in self._sent or self.ws.closed:
            return
        self._sent.add(command_id)
        try:
            await self._send(frame)
        except (ConnectionError, RuntimeError):
            return  # still pending: it goes out on the next connect
        await self.services.commands.mark_sent([command_id])

    def kick(self, code: int, reason: str, error: tuple[str, str] | None = None) -> None:
        """Ask the session to close with ``code`` (after an ``error`` frame, if given)."""
        if self._stop is None:
            self._stop = (code, reason, error)
            if self._idle and self._task is not None:
                self._task.cancel()

    def refuse(self, code: str, message: str) -> None:
        """Ask the session to send an error frame and close with 4403."""
        self.kick(uplink.CLOSE_REFUSED, code, (code, message))

    async def close(self, code: int, reason: str, *, error: tuple[str, str] | None = None) -> None:
        """Send an ``error`` frame (if given), then close with ``code``."""
        if self.ws.closed:
            return
        with contextlib.suppress(Exception):
            if error is not None:
                await self._send(uplink.error_frame(*error))
            await self.ws.close(code=code, message=reason.encode()[:120])


def _mismatch(registered: str | None, hello: frames.Hello) -> str:
    if registered is None:
        return (
            "the agent has a metadata key but the organisation has none registered; register "
            "its fingerprint or remove the key from the agent"
        )
    if hello.metadata_key_fingerprint is None:
        return "the organisation has a metadata key; give the agent its key file"
    return "the agent's metadata key is not the organisation's registered key"
