"""The live stream: the control plane's operator WebSocket, reconnected for as long as it runs.

It authenticates with ``Authorization: Bearer kvs_…`` on the upgrade request, waits for the
server's ``hello`` and hands every event to ``on_event(kind, data)``. Events have exactly one
shape, the operator-stream contract's (:mod:`common.events`); a message that does not match it
(unknown kind, missing field, not JSON) is logged, counted in ``refused`` and skipped, and the
stream carries on. When the socket drops it reconnects with
full-jitter exponential backoff (0.5 s doubling to 30 s, reset after a healthy connection). A
refused session (HTTP 401 on the upgrade, or close code 4401) stops it: the token will not get
better by retrying. The token is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from common import events
from common.cpclient import client_tls
from common.errors import KeyVaultError, ValidationError

log = logging.getLogger("keyvault.apps.stream")

PATH = "/api/v1/stream"
INITIAL_DELAY = 0.5
MAX_DELAY = 30.0
CLOSE_UNAUTHENTICATED = 4401
SESSION_EXPIRED = "session expired; log in again"

EventListener = Callable[[str, dict[str, Any]], None]
StatusListener = Callable[[bool], None]


class AuthFailed(Exception):
    """The control plane refused the session token."""


def stream_url(control_plane_url: str) -> str:
    """``ws(s)://…/api/v1/stream`` for a control plane's ``http(s)://`` base URL."""
    base = control_plane_url.strip().rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + PATH
    return "ws://" + base.removeprefix("http://") + PATH


def backoff_delays(initial: float = INITIAL_DELAY, cap: float = MAX_DELAY) -> Iterator[float]:
    """Upper bounds of the waits between attempts: ``initial`` doubling up to ``cap``."""
    delay = initial
    while True:
        yield delay
        delay = min(delay * 2, cap)


class LiveStream:
    """One operator WebSocket, kept connected until :meth:`stop` (or a refused session)."""

    def __init__(
        self,
        control_plane_url: str,
        token: str,
        *,
        ca_file: str | None = None,
        pin: str | None = None,
        on_event: EventListener | None = None,
        on_status: StatusListener | None = None,
        initial_delay: float = INITIAL_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.url = stream_url(control_plane_url)
        self._token = token
        self._refused: str | None = None  # plain ws:// off loopback: never connects
        try:
            self._ssl = client_tls(control_plane_url, ca_file, pin)
        except KeyVaultError as exc:
            self._ssl, self._refused = None, exc.message
        self.on_event = on_event
        self.on_status = on_status
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.online = False
        self.last_error: str | None = None
        self.connections = 0  # how many times the server said hello
        self.refused = 0  # messages that did not match the contract
        self._reported: bool | None = None
        self._stopping = False
        self._task: asyncio.Task[Any] | None = None

    def __repr__(self) -> str:
        return f"LiveStream(url={self.url!r}, online={self.online})"

    def _status(self, online: bool, force: bool = False) -> None:
        self.online = online
        if self._reported == online and not force:
            return
        self._reported = online
        if self.on_status is not None:
            self.on_status(online)

    async def run(self) -> None:
        """Connect, deliver events, reconnect with backoff; returns after stop() or a refusal."""
        self._task = asyncio.current_task()
        try:
            await self._loop()
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        finally:
            self._status(False)

    async def _loop(self) -> None:
        if self._refused is not None:
            self.last_error = self._refused
            self._status(False, force=True)
            return
        delays = backoff_delays(self.initial_delay, self.max_delay)
        while not self._stopping:
            try:
                healthy = await self._connect_once()
            except AuthFailed:
                self.last_error = SESSION_EXPIRED
                self._status(False, force=True)
                return
            self._status(False)
            if healthy:
                delays = backoff_delays(self.initial_delay, self.max_delay)
            if not self._stopping:
                await asyncio.sleep(random.uniform(0, next(delays)))

    async def _connect_once(self) -> bool:
        """One connection; True if the server said hello. Raises AuthFailed on a refusal."""
        headers = {"Authorization": f"Bearer {self._token}"}
        healthy = False
        try:
            async with connect(
                self.url, additional_headers=headers, ssl=self._ssl, open_timeout=10
            ) as ws:
                healthy = await self._receive(ws)
                code = ws.close_code
            if code == CLOSE_UNAUTHENTICATED:
                raise AuthFailed
            self.last_error = f"the live stream closed (code {code}); reconnecting"
        except InvalidStatus as exc:
            if exc.response.status_code in (401, 403):
                raise AuthFailed from None
            self.last_error = f"the live stream was refused: HTTP {exc.response.status_code}"
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == CLOSE_UNAUTHENTICATED:
                raise AuthFailed from None
            self.last_error = "the live stream dropped; reconnecting"
        except (OSError, TimeoutError, WebSocketException) as exc:
            reason = str(exc) or type(exc).__name__
            self.last_error = f"cannot reach the live stream at {self.url}: {reason}"
        return healthy

    async def _receive(self, ws: ClientConnection) -> bool:
        """Read frames until the socket closes; True once the server said hello."""
        healthy = False
        async for raw in ws:
            try:
                kind, doc = events.message_type(raw)
                if kind == events.HELLO:
                    healthy = True
                    self.connections += 1
                    self.last_error = None
                    self._status(True)
                elif kind not in events.CONTROL_TYPES:
                    self._deliver(events.decode(doc))
            except ValidationError as exc:
                self.refused += 1
                log.warning("ignored a live-stream message: %s", exc.message)
        return healthy

    def _deliver(self, event: events.Event) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event.kind.name, event.data)
        except Exception:
            log.exception("a live-stream listener failed on a %s event", event.kind)

    async def stop(self) -> None:
        """Close the socket and end :meth:`run` (waits for it when run in another task)."""
        self._stopping = True
        task = self._task
        if task is None or task.done() or task is asyncio.current_task():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
