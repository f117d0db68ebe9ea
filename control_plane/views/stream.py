"""The operator stream: a WebSocket pushing the caller's organisation's events.

Authenticate with ``Authorization: Bearer kvs_…`` on the upgrade request, or, when a client
cannot set headers, with a first message ``{"type": "auth", "token": "kvs_…"}`` within 10 s.
The server then sends ``{"type": "hello", …}`` followed by events, each in the one shape of the
operator-stream contract (:mod:`common.events`); ``{"type": "ping"}`` is answered with
``{"type": "pong"}``.

Fan-out: an event is serialised once per replica and framed once (:func:`_frame`); the bus
writes that same frame straight to every socket whose write buffer has room. A socket that is
behind gets the event through its subscription's bounded queue instead, drained by one task per
connection, so order is kept; one that overflows the queue is closed with 4408. Frames are not
compressed (the same bytes go to every socket; per-socket deflate would cost CPU and a zlib
context per connection).

Sessions are re-checked every 15 s by one sweep per replica (:class:`_Sweep`), not by a timer per
connection: one statement asks which of the sessions behind the replica's streams are still live
(fresh, no cache), and every stream of a session that ended is closed with 4401; a stream whose
subscription overflowed is closed with 4408. With 2,500 streams the old per-connection timers
woke the replica ~170 times a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import struct
import weakref
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from common import events
from common.errors import AuthenticationError, KeyVaultError
from control_plane.background import Spawn
from control_plane.bus import Subscription
from control_plane.runtime import ControlPlane
from control_plane.services.accounts import Accounts, token_hash
from control_plane.services.principal import Principal
from control_plane.views.context import INFO, cp_of

AUTH_TIMEOUT = 10.0
CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_SLOW = 4408
RECHECK_SECONDS = 15.0
log = logging.getLogger("keyvault.control_plane.stream")


@functools.lru_cache(maxsize=16)
def _frame(text: str) -> bytes:
    """One unmasked, uncompressed WebSocket text frame (RFC 6455 §5.2), built once per event."""
    payload = text.encode("utf-8")
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


class _Outbox:
    """Writes one socket's events: directly when its buffer has room, else via the queue."""

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self._ws = ws
        self._transport = transport
        self._high = transport.get_write_buffer_limits()[1]
        self.busy = False  # the forwarder holds queued events not yet written

    def offer(self, text: str) -> bool:
        """Write the event now if nothing is pending and the buffer has room; else False."""
        transport = self._transport
        if (
            self.busy
            or self._ws.closed
            or transport.is_closing()
            or transport.get_write_buffer_size() >= self._high
        ):
            return False
        transport.write(_frame(text))
        return True

    async def forward(self, sub: Subscription, too_slow: Callable[[], None]) -> None:
        """Send what the bus had to queue, in order; once the queue overflowed, call
        ``too_slow`` (it has the task serving the socket close it with 4408: see :class:`_Sweep`
        for why not from here) and stop."""
        ws = self._ws
        while not ws.closed:
            text = await sub.get()
            self.busy = True
            try:
                while True:
                    if sub.overflowed:
                        too_slow()
                        return
                    await ws.send_str(text)
                    if sub.queue.empty():
                        break
                    text = sub.queue.get_nowait()
            finally:
                self.busy = False


async def _first_message_auth(
    request: web.Request, ws: web.WebSocketResponse
) -> tuple[Principal, str]:
    try:
        msg = await ws.receive(timeout=AUTH_TIMEOUT)
    except TimeoutError:
        raise AuthenticationError("no auth message within 10 s") from None
    if msg.type != WSMsgType.TEXT:
        raise AuthenticationError("the first message must be {type: auth, token}")
    try:
        doc = json.loads(msg.data)
    except ValueError:
        raise AuthenticationError("the first message must be JSON") from None
    if (
        not isinstance(doc, dict)
        or doc.get("type") != events.AUTH
        or not isinstance(doc.get("token"), str)
    ):
        raise AuthenticationError("the first message must be {type: auth, token}")
    return await cp_of(request).accounts.session(doc["token"]), doc["token"]


class _Sweep:
    """One replica's session re-check for all its operator streams.

    Streams register under their session's token hash (never the token). While any is
    registered, one task wakes every :data:`RECHECK_SECONDS`, asks the database which of those
    sessions are live (:meth:`Accounts.live_sessions`: one statement, fresh), and ends every
    stream of an ended one with 4401, and every stream whose subscription overflowed with 4408.
    If the database cannot answer, nothing is closed and the next sweep asks again (ending a
    session needs the database too).

    The sweep does not close a socket itself: aiohttp's ``close()`` from another task than the
    one in ``receive()`` drops the connection without waiting for the client's answer, and the
    client then reports 1006 instead of the code it was sent. It interrupts the stream's own
    task instead (:meth:`end`), which closes with the code and waits for the answer
    (:func:`_serve`).
    """

    def __init__(self, accounts: Accounts, spawn: Spawn) -> None:
        self._accounts = accounts  # not the ControlPlane: _SWEEPS must not keep it alive
        self._spawn = spawn
        # token hash -> stream -> (its subscription, the task serving it)
        self._streams: dict[str, dict[web.WebSocketResponse, _Watched]] = {}
        self._ending: dict[web.WebSocketResponse, tuple[int, bytes]] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, key: str, ws: web.WebSocketResponse, sub: Subscription) -> None:
        """Watch ``ws`` (of the session whose token hashes to ``key``, served by the current
        task) until :meth:`remove`."""
        task = asyncio.current_task()
        assert task is not None
        self._streams.setdefault(key, {})[ws] = (sub, task)
        if self._task is None:
            self._task = self._spawn(self._run(), "stream-session-sweep")

    def remove(self, key: str, ws: web.WebSocketResponse) -> None:
        """Stop watching ``ws``."""
        self._ending.pop(ws, None)
        group = self._streams.get(key)
        if group is not None:
            group.pop(ws, None)
            if not group:
                del self._streams[key]

    def end(
        self, ws: web.WebSocketResponse, task: asyncio.Task[Any], code: int, why: bytes
    ) -> None:
        """Have the task serving ``ws`` close it with ``code`` (once)."""
        if ws in self._ending or ws.closed:
            return
        self._ending[ws] = (code, why)
        task.cancel()  # taken back by _serve, which then closes the socket

    def ending(self, ws: web.WebSocketResponse) -> tuple[int, bytes] | None:
        """The close :meth:`end` asked for ``ws``, if any (taken: asked once)."""
        return self._ending.pop(ws, None)

    async def _run(self) -> None:
        try:
            while self._streams:
                await asyncio.sleep(RECHECK_SECONDS)
                await self.sweep()
        finally:
            self._task = None  # the next stream starts a new sweep

    async def sweep(self) -> None:
        """End the streams that fell behind, and those whose session ended."""
        for group in list(self._streams.values()):
            for ws, (sub, task) in list(group.items()):
                if sub.overflowed:
                    self.end(ws, task, CLOSE_TOO_SLOW, b"too slow; reconnect")
        keys = list(self._streams)
        if not keys:
            return
        try:
            live = await self._accounts.live_sessions(keys)
        except Exception as exc:  # the database is down: keep the streams, ask again next time
            log.warning("stream session re-check failed (%s); retrying", type(exc).__name__)
            return
        for key in keys:
            if key not in live:
                for ws, (_sub, task) in list(self._streams.get(key, {}).items()):
                    self.end(ws, task, CLOSE_UNAUTHENTICATED, b"session ended")


_Watched = tuple[Subscription, "asyncio.Task[Any]"]
_SWEEPS: weakref.WeakKeyDictionary[ControlPlane, _Sweep] = weakref.WeakKeyDictionary()


def _sweep_of(cp: ControlPlane) -> _Sweep:
    sweep = _SWEEPS.get(cp)
    if sweep is None:
        sweep = _SWEEPS[cp] = _Sweep(cp.accounts, cp.spawn)
    return sweep


def _is_ping(data: str) -> bool:
    try:
        doc = json.loads(data)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("type") == events.PING


async def _serve(ws: web.WebSocketResponse, sweep: _Sweep) -> None:
    """Answer the client's messages until the socket closes (no timer: the sweep re-checks);
    when the sweep ends the stream, close it here with its code and wait for the answer."""
    try:
        async for msg in ws:  # ends at CLOSE, CLOSING or CLOSED
            if msg.type == WSMsgType.ERROR:
                return
            if msg.type == WSMsgType.TEXT and _is_ping(msg.data):
                await ws.send_json({"type": events.PONG})
    except asyncio.CancelledError:
        ending, task = sweep.ending(ws), asyncio.current_task()
        if ending is None or task is None or task.uncancel() > 0:
            raise  # not (only) the sweep's: the server is stopping or the client went away
        await ws.close(code=ending[0], message=ending[1])


async def stream(request: web.Request) -> web.WebSocketResponse:
    """GET /stream — WebSocket of the organisation's events."""
    cp = cp_of(request)
    principal, token = None, None
    header = request.headers.get("Authorization")
    if header:
        principal = await cp.accounts.authenticate(header)
        token = header.removeprefix("Bearer ").strip()
    ws = web.WebSocketResponse(heartbeat=30, compress=False)
    await ws.prepare(request)
    if principal is None:
        try:
            principal, token = await _first_message_auth(request, ws)
        except KeyVaultError as exc:
            await ws.close(code=CLOSE_UNAUTHENTICATED, message=exc.message.encode()[:120])
            return ws
    request[INFO].principal = principal
    transport = request.transport
    if transport is None:  # the client already went away
        return ws
    assert token is not None  # both ways of authenticating give the token
    key, sweep = token_hash(token), _sweep_of(cp)
    with cp.bus.subscribe(principal.org_id) as sub:
        await ws.send_json(
            {"type": events.HELLO, "org_id": principal.org_id, "user_id": principal.user_id}
        )
        outbox, handler = _Outbox(ws, transport), asyncio.current_task()
        assert handler is not None

        def too_slow() -> None:
            sweep.end(ws, handler, CLOSE_TOO_SLOW, b"too slow; reconnect")

        forwarder = asyncio.create_task(outbox.forward(sub, too_slow))
        sub.sink = outbox.offer  # events queued before the hello went out are sent first
        sweep.add(key, ws, sub)
        try:
            await _serve(ws, sweep)
        finally:
            sweep.remove(key, ws)
            sub.sink = None
            forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await forwarder
    return ws
