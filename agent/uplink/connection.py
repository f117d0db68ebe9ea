"""One uplink WebSocket: hello/welcome, then heartbeats, the two event streams and renewal.

After the welcome, four tasks share the socket until one of them ends it: the *receiver*
(acks, commands, policies, certificates, errors, the close), the *heartbeat* (which also starts
a renewal when due) and one *sender* per stream. A sender keeps exactly one batch in flight and
deletes (outbox) or records (audit cursor) only what an ``ack`` covers; an unacknowledged batch
is sent again on the next connection. With ``workers: N`` and a control plane whose welcome
offers ``audit_chains``, a fifth task ships the other workers' audit logs on the ``audit``
stream too, taking turns with chain 0 so that one audit batch is in flight at a time, and the
heartbeat carries each of their heads (``audit_chains``). The connection's end is an
:class:`Outcome` telling the service whether to dial again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp

from agent.assembly import replica
from agent.uplink import audit_stream, chains, health, inventory, meta, outbox
from agent.uplink.link import Link
from agent.uplink.renewal import Renewal
from agent.uplink.state import Enrollment
from agent.uplink.trace import FrameTrace
from common.errors import IntegrityError, KeyVaultError, UnavailableError, ValidationError
from common.uplink import (
    CLOSE_REFUSED,
    CLOSE_UNAUTHENTICATED,
    ERR_METADATA_KEY,
    ERR_NO_CERTIFICATE,
    ERR_RENEWAL,
    ERR_REVOKED,
    ERR_SUPERSEDED,
    ERR_UNKNOWN_VAULT,
    MAX_AUDIT_CHAIN,
    PROTOCOL,
    SERVER_TYPES,
    decode,
    encode,
)

log = logging.getLogger("keyvault.agent.uplink")
WELCOME_TIMEOUT = 15.0
AUDIT_FALLBACK = 5.0  # seconds after which the audit head is looked at anyway
AUDIT_RETRY = 60.0  # seconds before reading an unreadable audit log again
CHAINS_POLL = 1.0  # seconds between looks at the other workers' audit logs (workers: N)
FRAME_RATE = 50.0  # frames a second the control plane may send, on average ...
FRAME_BURST = 500  # ... and at once (policies and pending commands after the welcome)


@dataclass(frozen=True)
class Outcome:
    """How a connection (or a dial) ended: ``retry``, ``stopped``, or a terminal state."""

    kind: str  # retry | stopped | revoked | must_reenroll | refused
    message: str


def refusal(code: str | None, said: str = "") -> Outcome | None:
    """The terminal outcome an error code means, or None when it is worth dialling again."""
    if code == ERR_REVOKED:
        return Outcome(
            "revoked",
            "the control plane revoked this vault; the uplink stopped (the local API keeps "
            "serving). To rejoin, enroll again with a new token and --force",
        )
    if code == ERR_METADATA_KEY:
        return Outcome(
            "refused",
            "the control plane refused this agent's metadata key (its fingerprint is not the "
            "organisation's, or only one side has a key); install the organisation's key as "
            "metadata_key_file (default <data_dir>/metadata.key) and restart the agent",
        )
    if code in (ERR_UNKNOWN_VAULT, ERR_NO_CERTIFICATE, ERR_SUPERSEDED):
        return Outcome(
            "must_reenroll",
            f"the control plane does not accept this agent's certificate ({code}"
            f"{': ' + said if said else ''}); enroll again with `keyvault agent enroll --force`",
        )
    return None


class RateLimit:
    """A token bucket: ``rate`` a second, at most ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        """Spend one token; False when none is left."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _Ended(Exception):
    """Raised inside a task to end the connection with an outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


class _Stream:
    """One event stream's single batch in flight."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.in_flight: int | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.lock = asyncio.Lock()  # one batch in flight, whichever audit chain it is from

    def ack(self, upto: Any) -> None:
        if type(upto) is not int or self.in_flight is None or self.waiter is None:
            log.debug("ignored an ack for %s with nothing in flight", self.name)
            return
        if not self.waiter.done():
            self.waiter.set_result(min(upto, self.in_flight))


def _clean(text: Any) -> str:
    return "".join(c for c in str(text) if c.isprintable())[:200]


class Connection:
    """The life of one WebSocket."""

    def __init__(
        self, link: Link, ws: aiohttp.ClientWebSocketResponse, enrollment: Enrollment
    ) -> None:
        self.link = link
        self.agent = link.agent
        self.ws = ws
        self.vault_id = enrollment.vault_id
        self.settings = link.settings
        self.interval = self.settings.heartbeat_interval
        self.streams = {"outbox": _Stream("outbox"), "audit": _Stream("audit")}
        self.renewal = Renewal(link.files, self.vault_id, self.settings.renew_at, clock=link.clock)
        self.last_error_code: str | None = None
        self.audit_chains = 0  # the highest worker audit chain the control plane stores
        self.trace = FrameTrace(self.settings.trace_file)
        self._send_lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        """Send one frame (one writer at a time)."""
        text = encode(frame)
        async with self._send_lock:
            self.trace.write("out", text)
            await self.ws.send_str(text)

    def _decode(self, text: str) -> dict[str, Any]:
        self.trace.write("in", text)
        return decode(text, SERVER_TYPES)

    # ------------------------------------------------------------------ the whole life
    async def run(self) -> Outcome:
        """Hello, welcome, then the four (or five) tasks until one ends the connection."""
        try:
            return await self._run()
        finally:
            self.trace.close()

    async def _run(self) -> Outcome:
        key = self.link.metadata_key
        await self.send(
            {
                "type": "hello",
                "protocol": PROTOCOL,
                "vault_id": self.vault_id,
                "agent_version": self.agent.version,
                "metadata_key_fingerprint": key.fingerprint if key else None,
            }
        )
        refused = await self._welcome()
        if refused is not None:
            return refused
        self.link.connected()
        jobs: list[Callable[[], Coroutine[Any, Any, Outcome]]] = [
            self._receive,
            self._heartbeats,
            self._send_outbox,
            self._send_audit,
        ]
        if self.audit_chains:  # an older control plane gets chain 0 only, as before
            jobs.append(self._send_worker_audit)
        tasks = [asyncio.create_task(job()) for job in jobs]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return _outcome_of(done.pop())

    async def _welcome(self) -> Outcome | None:
        try:
            msg = await self.ws.receive(timeout=WELCOME_TIMEOUT)
        except TimeoutError:
            return Outcome("retry", "the control plane sent no welcome in time")
        if msg.type != aiohttp.WSMsgType.TEXT:
            return self._closed_outcome()
        try:
            frame = self._decode(msg.data)
        except ValidationError as exc:
            return Outcome("retry", f"the control plane's first frame is invalid: {exc.message}")
        if frame["type"] == "error":
            self.last_error_code = str(frame.get("code"))
            said = _clean(frame.get("message", ""))
            return refusal(self.last_error_code, said) or Outcome(
                "retry", f"the control plane refused the hello ({_clean(frame.get('code'))})"
            )
        if frame["type"] != "welcome" or frame.get("vault_id") != self.vault_id:
            return Outcome("retry", "the control plane's welcome does not match this vault")
        theirs = frame.get("heartbeat_interval_seconds")
        if isinstance(theirs, int | float) and not isinstance(theirs, bool) and theirs > 0:
            self.interval = min(self.interval, float(theirs))
        offered = frame.get("audit_chains")  # a control plane that stores worker audit chains
        if type(offered) is int and offered >= 1:
            self.audit_chains = min(offered, MAX_AUDIT_CHAIN)
        return None

    # ------------------------------------------------------------------ receiving
    async def _receive(self) -> Outcome:
        bucket = RateLimit(FRAME_RATE, FRAME_BURST)
        async for msg in self.ws:
            if not bucket.take():
                await self.link.alerts.raise_(
                    f"the control plane sent more than {FRAME_RATE} frames a second (burst "
                    f"{FRAME_BURST}); the agent closed the uplink and dials again later"
                )
                return Outcome("retry", "the control plane sent frames too fast")
            if msg.type == aiohttp.WSMsgType.ERROR:
                return Outcome("retry", f"the connection failed ({_clean(msg.data)})")
            if msg.type != aiohttp.WSMsgType.TEXT:
                return Outcome("retry", "the control plane sent a binary frame")
            try:
                frame = self._decode(msg.data)
            except ValidationError as exc:
                return Outcome("retry", f"the control plane sent an invalid frame: {exc.message}")
            await self._dispatch(frame)
        return self._closed_outcome()

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "ack":
            stream = self.streams.get(str(frame.get("stream")))
            if stream is not None:
                stream.ack(frame.get("upto"))
        elif kind == "command":
            await self.link.queue_command(frame)
        elif kind == "policies":
            await self.link.store_policies(frame.get("policies"))
        elif kind == "certificate":
            try:
                self.link.certificate = self.renewal.accept(frame)
            except ValidationError as exc:
                self.renewal.failed(exc.message)
        elif kind == "error":
            self._on_error(frame)

    def _on_error(self, frame: dict[str, Any]) -> None:
        code, said = _clean(frame.get("code")), _clean(frame.get("message", ""))
        if code == ERR_RENEWAL:
            self.renewal.failed(said)
            return
        self.last_error_code = code
        log.warning("the control plane reported %s: %s", code, said)

    def _closed_outcome(self) -> Outcome:
        code = self.ws.close_code
        if code == CLOSE_UNAUTHENTICATED:
            return refusal(ERR_NO_CERTIFICATE) or Outcome("must_reenroll", "unauthenticated")
        if code == CLOSE_REFUSED:
            found = refusal(self.last_error_code)
            if found is not None:
                return found
            return Outcome(
                "refused", f"the control plane refused this agent ({self.last_error_code})"
            )
        return Outcome("retry", f"the control plane closed the connection (code {code})")

    # ------------------------------------------------------------------ heartbeats
    async def _heartbeats(self) -> Outcome:
        while True:
            cert = self.link.certificate
            if cert is not None and self.renewal.due(cert):
                await self.send(self.renewal.request())
            try:
                doc = await health.document(
                    self.agent,
                    status=self.link.health_status(),
                    outbox_depth=self.link.status.outbox_depth(self.agent.audit.head[0]),
                    certificate_not_after=cert.not_after if cert else None,
                    policies_version=self.link.policies_version,
                    chains=self._worker_chains() if self.audit_chains else (),
                )
            except KeyVaultError:  # the store is unavailable: still say we are alive
                doc = {"status": "degraded", "version": self.agent.version}
            await self.send({"type": "heartbeat", "health": doc})
            await asyncio.sleep(self.interval)

    # ------------------------------------------------------------------ the two streams
    async def _deliver(self, stream: _Stream, events: list[dict[str, Any]]) -> int:
        """Send one batch and wait for its ack; returns ``upto``."""
        async with stream.lock:
            return await self._deliver_one(stream, events)

    async def _deliver_one(self, stream: _Stream, events: list[dict[str, Any]]) -> int:
        loop = asyncio.get_running_loop()
        stream.in_flight, stream.waiter = events[-1]["seq"], loop.create_future()
        try:
            await self.send({"type": "events", "stream": stream.name, "batch": events})
            try:
                return await asyncio.wait_for(stream.waiter, self.settings.ack_timeout)
            except TimeoutError:
                raise _Ended(
                    Outcome(
                        "retry",
                        f"no ack for the {stream.name} stream within "
                        f"{self.settings.ack_timeout:g} s",
                    )
                ) from None
        finally:
            stream.in_flight, stream.waiter = None, None

    async def _send_outbox(self) -> Outcome:
        store, size = self.agent.store, self.settings.batch_size
        key = self.link.metadata_key
        while True:
            self.link.changes.wakeup.clear()  # a write from now on wakes wait_for_work
            events = await store.read(
                lambda c: inventory.events(c, outbox.oldest(c, size), self.vault_id, key)
            )
            if not events:
                await self.link.wait_for_work()
                continue
            upto = await self._deliver(self.streams["outbox"], events)
            await store.write(partial(outbox.delete_upto, seq=upto))
            await self.link.refresh_depth()

    async def _send_audit(self) -> Outcome:
        store, size = self.agent.store, self.settings.batch_size
        cursor = await store.read(lambda c: meta.audit_cursor(c, self.vault_id))
        if cursor > self.agent.audit.head[0]:
            log.warning(
                "the audit log is shorter than the uplink's cursor; sending it from the start"
            )
            cursor = 0
        self.link.status.audit_cursor = cursor
        appended = self.agent.audit_appended
        while True:
            appended.clear()  # an append from now on wakes the wait below
            if self.agent.audit.head[0] <= cursor:
                await appended.wait(AUDIT_FALLBACK)
                continue
            try:
                entries = await asyncio.to_thread(
                    audit_stream.read, self.agent.audit.folder, cursor, size
                )
            except UnavailableError as exc:
                self.link.note_error(f"the audit log cannot be read for the uplink: {exc.message}")
                await asyncio.sleep(AUDIT_RETRY)
                continue
            if not entries:
                await appended.wait(AUDIT_FALLBACK)
                continue
            ids = await store.read(partial(audit_stream.resolve, entries=entries))
            upto = await self._deliver(
                self.streams["audit"],
                [audit_stream.event(e, ids, self.agent.audit_guard.state.epoch) for e in entries],
            )
            doc = {"vault_id": self.vault_id, "seq": upto}
            await store.write(partial(meta.put, key=meta.AUDIT_CURSOR, value=doc))
            cursor = self.link.status.audit_cursor = upto

    async def _send_worker_audit(self) -> Outcome:
        """Ship the other workers' audit logs (``workers: N``), each chain from its own cursor
        and with its own epoch; a chain that appears later is picked up, one that is gone
        keeps its cursor. Polls every :data:`CHAINS_POLL` seconds while there is nothing new."""
        cursors: dict[int, tuple[int, int]] = {}  # chain -> (epoch, seq) acknowledged
        seen: dict[int, tuple[int, int] | None] = {}  # chain -> its log's mark when caught up
        resting: dict[int, float] = {}  # chain -> when to try a chain that failed again
        while True:
            found = await asyncio.to_thread(self._worker_chains)
            busy = False
            for chain in found:
                if resting.get(chain.number, 0.0) > time.monotonic():
                    continue
                if chain.number in seen and seen[chain.number] == chain.mark:
                    continue  # the same file, no longer: nothing new since it was caught up
                try:
                    sent = await self._ship_chain(chain, cursors)
                    busy |= sent
                    if not sent:
                        seen[chain.number] = chain.mark
                except (UnavailableError, IntegrityError) as exc:
                    resting[chain.number] = time.monotonic() + AUDIT_RETRY
                    self.link.note_error(
                        f"worker {chain.number}'s audit log cannot be shipped: {exc.message}; "
                        "run `keyvault agent audit verify`"
                    )
            if not busy:
                await asyncio.sleep(CHAINS_POLL)

    def _worker_chains(self) -> list[chains.Chain]:
        """The other workers' audit logs now, for the heartbeat's heads (a few ``stat`` calls)."""
        name = replica(self.agent.settings).name
        return chains.worker_chains(self.agent.settings.data_dir, name, self.audit_chains)

    async def _ship_chain(self, chain: chains.Chain, cursors: dict[int, tuple[int, int]]) -> bool:
        """Send one batch of ``chain`` if it has new entries; True when one was sent."""
        store, size, k = self.agent.store, self.settings.batch_size, chain.number
        key = self.agent.audit_guard.key
        epoch = await store.read(lambda c: chains.chain_epoch(c, key, chain.replica))
        if epoch is None:  # that worker has not opened its log yet
            return False
        if k not in cursors:  # the first look on this connection: where the last one got to
            acked, seq = await store.read(lambda c: meta.chain_cursor(c, self.vault_id, k))
            shorter = acked == epoch and seq > 0
            if shorter and not await asyncio.to_thread(audit_stream.has_entry, chain.folder, seq):
                log.warning(
                    "worker %d's audit log is shorter than the uplink's cursor; sending it "
                    "from the start",
                    k,
                )
                seq = 0
            cursors[k] = (acked, seq)
        if epoch != cursors[k][0]:  # a new chain (or never shipped): from its start
            cursors[k] = (epoch, 0)
        entries = await asyncio.to_thread(audit_stream.read, chain.folder, cursors[k][1], size)
        if not entries:
            return False
        again = await store.read(lambda c: chains.chain_epoch(c, key, chain.replica))
        if again != epoch:  # the worker restarted on a new chain meanwhile: look again
            return True
        ids = await store.read(partial(audit_stream.resolve, entries=entries))
        upto = await self._deliver(
            self.streams["audit"], [audit_stream.event(e, ids, epoch, k) for e in entries]
        )
        doc = {"vault_id": self.vault_id, "epoch": epoch, "seq": upto}
        await store.write(partial(meta.put, key=meta.chain_cursor_key(k), value=doc))
        cursors[k] = (epoch, upto)
        return True


def _outcome_of(task: asyncio.Task[Outcome]) -> Outcome:
    """The outcome a finished task stands for (an error is worth a retry, never a crash)."""
    exc = task.exception()
    if exc is None:
        return task.result()
    if isinstance(exc, _Ended):
        return exc.outcome
    if isinstance(exc, KeyVaultError):
        return Outcome("retry", exc.message)
    if isinstance(exc, aiohttp.ClientError | ConnectionError | OSError):
        return Outcome("retry", f"the connection failed ({type(exc).__name__})")
    log.error("uplink task failed", exc_info=exc)
    return Outcome("retry", f"internal error in the uplink ({type(exc).__name__}); see the log")
