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
context per connection). The session is re-checked about every 15 s by the connection's read
loop (one timer per connection, none per event) and the socket is closed with 4401 once it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import struct
import time

from aiohttp import WSMsgType, web

from common import events
from common.errors import AuthenticationError, KeyVaultError
from control_plane.bus import Subscription
from control_plane.services.principal import Principal
from control_plane.views.context import INFO, cp_of

AUTH_TIMEOUT = 10.0
CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_SLOW = 4408
RECHECK_SECONDS = 15.0


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

    async def forward(self, sub: Subscription) -> None:
        """Send what the bus had to queue, in order; close with 4408 once the queue overflowed."""
        ws = self._ws
        while not ws.closed:
            text = await sub.get()
            self.busy = True
            try:
                while True:
                    if sub.overflowed:
                        await ws.close(code=CLOSE_TOO_SLOW, message=b"too slow; reconnect")
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


async def _still_welcome(
    request: web.Request, ws: web.WebSocketResponse, sub: Subscription, token: str | None
) -> bool:
    """False (after closing the socket) if the client fell behind or its session ended."""
    if sub.overflowed:
        await ws.close(code=CLOSE_TOO_SLOW, message=b"too slow; reconnect")
        return False
    if token is not None:
        try:
            await cp_of(request).accounts.recheck(token)
        except AuthenticationError:
            await ws.close(code=CLOSE_UNAUTHENTICATED, message=b"session ended")
            return False
    return True


def _is_ping(data: str) -> bool:
    try:
        doc = json.loads(data)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("type") == events.PING


def _next_recheck() -> float:
    return time.monotonic() + RECHECK_SECONDS * random.uniform(0.8, 1.2)


async def _serve(
    request: web.Request, ws: web.WebSocketResponse, sub: Subscription, token: str | None
) -> None:
    """Answer the client's messages; re-check the session whenever its deadline passes."""
    recheck_at = _next_recheck()
    while not ws.closed:
        try:
            msg = await ws.receive(timeout=max(0.001, recheck_at - time.monotonic()))
        except TimeoutError:
            msg = None
        if time.monotonic() >= recheck_at:
            if not await _still_welcome(request, ws, sub, token):
                return
            recheck_at = _next_recheck()
        if msg is None:
            continue
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return
        if msg.type == WSMsgType.TEXT and _is_ping(msg.data):
            await ws.send_json({"type": events.PONG})


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
    with cp.bus.subscribe(principal.org_id) as sub:
        await ws.send_json(
            {"type": events.HELLO, "org_id": principal.org_id, "user_id": principal.user_id}
        )
        outbox = _Outbox(ws, transport)
        forwarder = asyncio.create_task(outbox.forward(sub))
        sub.sink = outbox.offer  # events queued before the hello went out are sent first
        try:
            await _serve(request, ws, sub, token)
        finally:
            sub.sink = None
            forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await forwarder
    return ws
