"""The uplink service of ``keyvault agent run``: wait for enrollment, dial, back off, stop.

:meth:`Uplink.prepare` runs before the API serves (so no write escapes change tracking), then
:meth:`Uplink.run` loops: read ``state.json`` (polled while not enrolled, so an enrollment made
while the agent runs is picked up), check the certificate, dial, and after a connection ends
either back off (full jitter) or -- revoked, refused, certificate expired or unknown -- stop
dialling until ``state.json`` changes. Nothing here may take the daemon down: every failure
becomes a state and a log line, and the local API keeps serving throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp

from agent.assembly import Agent
from agent.background import Background
from agent.crypto import Clock, utcnow
from agent.uplink import meta, outbox
from agent.uplink.backoff import Backoff
from agent.uplink.commands import CommandRunner
from agent.uplink.connection import Connection, Outcome, refusal
from agent.uplink.health import FailureWatch, policies_version
from agent.uplink.intake import Alerts, Intake, Refused
from agent.uplink.state import (
    CLIENT_CRT,
    CLIENT_KEY,
    SERVICE_CA,
    Certificate,
    Enrollment,
    UplinkFiles,
)
from agent.uplink.status import STOPPED, UplinkStatus
from agent.uplink.tlsctx import uplink_context
from common.errors import ConfigError, KeyVaultError
from common.metadata_key import MetadataKey
from common.uplink import MAX_FRAME, UPLINK_PATH

log = logging.getLogger("keyvault.agent.uplink")
DIAL_TIMEOUT = 30.0
HOUSEKEEPING_EVERY = 2.0
MAX_QUEUED_COMMANDS = 1000  # commands from the control plane waiting to run
OUTBOX_FALLBACK = 5.0  # seconds after which the outbox is read anyway (other writers)


class Uplink(Background):
    """The agent's link to its control plane (one per running agent)."""

    task_name = "uplink"

    def __init__(
        self,
        agent: Agent,
        *,
        clock: Clock = utcnow,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        super().__init__()
        self.agent = agent
        self.settings = agent.settings.uplink
        self.files = UplinkFiles(agent.settings.uplink_dir)
        self.status: UplinkStatus = agent.uplink
        self.clock = clock
        self.backoff = Backoff(
            self.settings.backoff_base, self.settings.backoff_cap, uniform=uniform
        )
        self.commands = CommandRunner(agent, clock=clock)
        self.commands_queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MAX_QUEUED_COMMANDS)
        self.metadata_key: MetadataKey | None = None
        self.alerts = Alerts(agent)
        self.intake = Intake(agent, None, self.alerts)
        self.enrollment: Enrollment | None = None
        self.certificate: Certificate | None = None
        self.policies_version = policies_version([])
        self._watch = FailureWatch(agent)
        self.changes = agent.secrets.feed  # tracked writes wake the outbox sender
        self._recovered = False

    def __repr__(self) -> str:
        return f"Uplink(state={self.status.state!r}, vault_id={self.status.vault_id!r})"

    # ------------------------------------------------------------------ lifecycle
    def prepare(self) -> None:
        """Load the metadata key (a bad one stops the start) and switch change tracking on
        when the data folder is enrolled. Call before the API serves."""
        path = self.agent.settings.metadata_key_path
        self.metadata_key = MetadataKey.load(path) if path is not None else None
        self.intake = Intake(self.agent, self.metadata_key, self.alerts)
        with contextlib.suppress(ConfigError):  # a broken state.json is reported by run()
            if self.files.load_state() is not None:
                self.changes.track()

    async def run(self) -> None:
        """The supervisor loop (returns once stopped; never raises)."""
        helpers = [
            asyncio.create_task(self._housekeeping()),
            asyncio.create_task(self._command_worker()),
        ]
        try:
            await self._supervise()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    # ------------------------------------------------------------------ supervision
    async def _supervise(self) -> None:
        while not self._stopping.is_set():
            try:
                if await self._step():
                    return
            except Exception:
                log.exception("uplink supervisor failed; retrying")
                await self._sleep(self.backoff.next_delay())

    async def _step(self) -> bool:
        """One dial (or wait) and what follows it; True once the uplink is stopped."""
        stamp = self.files.stamp()
        try:
            outcome = await self._cycle()
        except Exception as exc:
            log.exception("uplink cycle failed")
            outcome = Outcome("retry", f"internal error in the uplink ({type(exc).__name__})")
        if outcome.kind == "stopped":
            return True
        if outcome.kind == "not_enrolled":
            self.status.state = "not_enrolled"
            await self._wait_for_change(stamp)
        elif outcome.kind in STOPPED:
            self.status.state, self.status.last_error = outcome.kind, outcome.message
            log.error("uplink stopped: %s", outcome.message)
            await self._wait_for_change(stamp)
            self.backoff.reset()
        else:
            self.status.state, self.status.last_error = "backing_off", outcome.message
            delay = self.backoff.next_delay()
            log.warning("uplink: %s; next attempt in %.1f s", outcome.message, delay)
            await self._sleep(delay)
        return False

    async def _cycle(self) -> Outcome:
        try:
            enrollment = self.files.load_state()
        except ConfigError as exc:
            return Outcome("must_reenroll", exc.message)
        if enrollment is None:
            return Outcome("not_enrolled", "")
        await self._activate(enrollment)
        try:
            cert = self.files.certificate()
        except (ConfigError, ValueError) as exc:
            return Outcome("must_reenroll", getattr(exc, "message", str(exc)))
        self.certificate = cert
        self.status.certificate_not_after = cert.not_after.isoformat()
        if self.clock() >= cert.not_after:
            return Outcome(
                "must_reenroll",
                f"the uplink certificate expired at {cert.not_after.isoformat()}; enroll again "
                "with a new token: `keyvault agent enroll --force --control-plane URL --token T`",
            )
        self.status.state = "connecting"
        return await self._dial(enrollment)

    async def _activate(self, enrollment: Enrollment) -> None:
        """First sight of an identity: track changes, queue a full resync for a new vault."""
        if enrollment == self.enrollment:
            return
        self.status.vault_id = enrollment.vault_id
        self.status.control_plane_url = enrollment.control_plane_url
        path = self.agent.settings.metadata_key_path
        if self.metadata_key is None and path is not None:  # enrolled with the key just now
            with contextlib.suppress(ConfigError):
                self.metadata_key = MetadataKey.load(path)
                self.intake = Intake(self.agent, self.metadata_key, self.alerts)  # verify with it
        self.changes.track()
        store = self.agent.store
        synced = await store.read(lambda c: meta.get(c, meta.SYNCED_VAULT))
        if synced != enrollment.vault_id:
            count = await store.write(outbox.resync(self._now(), enrollment.vault_id))
            log.info("enrolled as vault %s: queued the inventory of %d secrets",
                     enrollment.vault_id, count)  # fmt: skip
        held = await store.read(lambda c: meta.get(c, meta.POLICIES))
        if isinstance(held, dict) and isinstance(held.get("version"), str):
            self.policies_version = held["version"]
        self.status.audit_cursor = await store.read(
            lambda c: meta.audit_cursor(c, enrollment.vault_id)
        )
        if not self._recovered:
            self._recovered = True
            if await self.commands.recover():
                log.warning("reported commands interrupted by the last stop as failed")
        self.backoff.reset()
        await self.refresh_depth()
        self.enrollment = enrollment  # last: a failure above is retried from the start

    # ------------------------------------------------------------------ one dial
    async def _dial(self, enrollment: Enrollment) -> Outcome:
        files = self.files
        try:
            ctx = uplink_context(
                files.path(SERVICE_CA), files.path(CLIENT_CRT), files.path(CLIENT_KEY)
            )
        except KeyVaultError as exc:
            return Outcome("must_reenroll", f"the uplink's TLS files cannot be used: {exc.message}")
        url = enrollment.control_plane_url.replace("https://", "wss://", 1) + UPLINK_PATH
        refused: dict[str, str] = {}
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(_capture_refusal(refused))
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            try:
                ws = await asyncio.wait_for(
                    session.ws_connect(
                        url,
                        ssl=ctx,
                        heartbeat=max(self.settings.heartbeat_interval, 1.0),
                        max_msg_size=MAX_FRAME,
                    ),
                    DIAL_TIMEOUT,
                )
            except aiohttp.WSServerHandshakeError as exc:
                return _upgrade_refused(exc.status, refused)
            except aiohttp.ClientConnectorCertificateError as exc:
                return Outcome(
                    "retry",
                    f"the gateway's certificate is not valid for {enrollment.control_plane_url} "
                    f"under the service CA ({exc.certificate_error})",
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                return Outcome(
                    "retry",
                    f"cannot reach the control plane at {enrollment.control_plane_url} "
                    f"({_reason(exc)})",
                )
            return await self._converse(ws, enrollment)

    async def _converse(
        self, ws: aiohttp.ClientWebSocketResponse, enrollment: Enrollment
    ) -> Outcome:
        loop = asyncio.get_running_loop()
        started = loop.time()
        stamp = self.files.stamp()
        talk = asyncio.create_task(Connection(self, ws, enrollment).run())
        stop = asyncio.create_task(self._stopping.wait())
        change = asyncio.create_task(self._wait_for_change(stamp))
        try:
            done, _ = await asyncio.wait({talk, stop, change}, return_when=asyncio.FIRST_COMPLETED)
            if talk in done:
                return talk.result()
            talk.cancel()
            await asyncio.gather(talk, return_exceptions=True)
            if stop in done:
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"agent stopping")
                return Outcome("stopped", "")
            await ws.close(code=aiohttp.WSCloseCode.OK, message=b"identity changed")
            return Outcome("retry", "the enrollment changed; reconnecting with the new identity")
        finally:
            for task in (talk, stop, change):
                task.cancel()
            await asyncio.gather(talk, stop, change, return_exceptions=True)
            if not ws.closed:
                await ws.close()
            self.backoff.connected_for(loop.time() - started)

    # ------------------------------------------------------------------ for the connection
    def connected(self) -> None:
        """The welcome arrived."""
        self.status.state = "connected"
        self.status.last_connected_at = self._now()
        log.info("uplink connected to %s as vault %s", self.status.control_plane_url,
                 self.status.vault_id)  # fmt: skip

    def note_error(self, message: str) -> None:
        """Record a problem that does not end the connection."""
        self.status.last_error = message
        log.warning("uplink: %s", message)

    def health_status(self) -> str:
        """The heartbeat's ``status`` (degraded after a recent failure, or while this process
        runs on an audit chain it had to start over)."""
        cert = self.certificate
        if cert is not None and self.clock() >= cert.not_after:
            return "must_reenroll"
        broken = self.agent.audit_guard.state.problem is not None
        return "degraded" if self._watch.degraded or broken else "healthy"

    async def store_policies(self, policies: Any) -> None:
        """Merge the verified intents of a ``policies`` frame into the policies the rotation
        scheduler runs (:mod:`agent.uplink.intake`: anything else is refused and alerted)."""
        version = await self.intake.policies(policies, self.status.vault_id)
        if version is not None:
            self.policies_version = version
        self.kick()

    async def queue_command(self, frame: dict[str, Any]) -> None:
        """Queue a ``command`` frame for the worker; a full queue refuses it (alerted)."""
        try:
            self.commands_queue.put_nowait(frame)
        except asyncio.QueueFull:
            await self.alerts.raise_(
                f"more than {MAX_QUEUED_COMMANDS} commands were waiting; the rest were refused"
            )
            self.kick()

    async def refresh_depth(self) -> None:
        """Count the outbox rows (the health's depth adds the audit entries not yet acked)."""
        self.status.outbox_rows = await self.agent.store.read(outbox.depth)

    def kick(self) -> None:
        """Wake the outbox sender (rows were added outside the secret write path)."""
        self.changes.wakeup.notify()

    async def wait_for_work(self) -> None:
        """Until a tracked write commits, a kick, or :data:`OUTBOX_FALLBACK` seconds pass
        (call ``changes.wakeup.clear()`` before looking at the outbox)."""
        await self.changes.wakeup.wait(OUTBOX_FALLBACK)

    # ------------------------------------------------------------------ background helpers
    async def _housekeeping(self) -> None:
        """Alerts from the failure counters, and the outbox depth, every few seconds."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_EVERY)
            try:
                if self.enrollment is None:
                    self._watch.new_alerts()  # nowhere to send them: just move the marks
                    continue
                if await self._watch.queue_alerts(self._now()):
                    self.kick()
                await self.refresh_depth()
            except KeyVaultError as exc:
                log.debug("uplink housekeeping skipped: %s", exc.message)
            except Exception:
                log.exception("uplink housekeeping failed; trying again")

    async def _command_worker(self) -> None:
        """Commands run one at a time, across connections."""
        while True:
            frame = await self.commands_queue.get()
            try:
                verified = await self.intake.command(frame, self.status.vault_id)
                await self.commands.handle(verified)
            except Refused as exc:
                await self.alerts.raise_(exc.reason)
                await self.commands.refuse(frame.get("id"))
            except KeyVaultError as exc:
                log.error("a command could not be finished: %s", exc.message)
            except Exception:
                log.exception("a command failed unexpectedly")
            self.kick()

    async def _wait_for_change(self, stamp: tuple[int, int, int] | None) -> None:
        """Until ``state.json`` is created, replaced or removed (or the uplink stops)."""
        while not self._stopping.is_set() and self.files.stamp() == stamp:
            await self._sleep(self.settings.enroll_poll_interval)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _now(self) -> str:
        return self.clock().isoformat()


def _capture_refusal(into: dict[str, str]) -> Any:
    """A trace hook that keeps the JSON error of a refused upgrade (aiohttp drops the body)."""

    async def on_end(_s: Any, _c: Any, params: aiohttp.TraceRequestEndParams) -> None:
        resp = params.response
        if resp.status < 400:
            return
        with contextlib.suppress(Exception):
            doc = json.loads(await resp.content.read(64 * 1024))
            err = doc.get("error") or {}
            into["code"], into["message"] = str(err.get("code", "")), str(err.get("message", ""))

    return on_end


def _upgrade_refused(status: int, body: dict[str, str]) -> Outcome:
    code = body.get("code") or None
    said = "".join(c for c in body.get("message", "") if c.isprintable())[:200]
    if status == 401:
        return refusal(code or "client_certificate_required", said) or Outcome(
            "must_reenroll", "the gateway did not accept the client certificate"
        )
    if status == 403:
        found = refusal(code, said)
        if found is not None:
            return found
    return Outcome("retry", f"the gateway answered HTTP {status} ({code or 'no error code'})")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(getattr(exc, "strerror", None) or exc) or type(exc).__name__
    return "".join(c for c in text.splitlines()[0] if c.isprintable())[:200]
