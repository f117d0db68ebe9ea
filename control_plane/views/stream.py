"""The operator stream: a WebSocket pushing the caller's organisation's events.

Authenticate with ``Authorization: Bearer kvs_…`` on the upgrade request, or, when a client
cannot set headers, with a first message ``{"type": "auth", "token": "kvs_…"}`` within 10 s.
The server then sends ``{"type": "hello", …}`` followed by events; ``{"type": "ping"}`` is
answered with ``{"type": "pong"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random

from aiohttp import WSMsgType, web

from common.errors import AuthenticationError, KeyVaultError
from control_plane.bus import Subscription
from control_plane.services.principal import Principal
from control_plane.views.context import INFO, cp_of

AUTH_TIMEOUT = 10.0
CLOSE_UNAUTHENTICATED = 4401
CLOSE_TOO_SLOW = 4408
RECHECK_SECONDS = 15.0


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
        or doc.get("type") != "auth"
        or not isinstance(doc.get("token"), str)
    ):
        raise AuthenticationError("the first message must be {type: auth, token}")
    return await cp_of(request).accounts.session(doc["token"]), doc["token"]


async def _forward(
    request: web.Request, ws: web.WebSocketResponse, sub: Subscription, token: str | None
) -> None:
    """Send the subscription's events; every quiet 15 s re-check the session and the queue."""
    while not ws.closed:
        try:
            async with asyncio.timeout(RECHECK_SECONDS * random.uniform(0.8, 1.2)):
                text = await sub.get()
        except TimeoutError:
            if not await _still_welcome(request, ws, sub, token):
                return
            continue
        await ws.send_str(text)
        while not sub.queue.empty():  # a burst: send what is queued without more timers
            await ws.send_str(sub.queue.get_nowait())


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
    return isinstance(doc, dict) and doc.get("type") == "ping"


async def stream(request: web.Request) -> web.WebSocketResponse:
    """GET /stream — WebSocket of the organisation's events."""
    cp = cp_of(request)
    principal, token = None, None
    header = request.headers.get("Authorization")
    if header:
        principal = await cp.accounts.authenticate(header)
        token = header.removeprefix("Bearer ").strip()
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    if principal is None:
        try:
            principal, token = await _first_message_auth(request, ws)
        except KeyVaultError as exc:
            await ws.close(code=CLOSE_UNAUTHENTICATED, message=exc.message.encode()[:120])
            return ws
    request[INFO].principal = principal
    with cp.bus.subscribe(principal.org_id) as sub:
        await ws.send_json(
            {"type": "hello", "org_id": principal.org_id, "user_id": principal.user_id}
        )
        forwarder = asyncio.create_task(_forward(request, ws, sub, token))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and _is_ping(msg.data):
                    await ws.send_json({"type": "pong"})
        finally:
            forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await forwarder
    return ws
