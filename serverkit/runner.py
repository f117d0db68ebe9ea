"""The one adapter over aiohttp's server internals: our JSON error for what the HTTP parser
refuses, and a time limit on reading a request's head (slowloris).

aiohttp answers a request it cannot parse (a URL or header line over 8 KiB, a malformed header)
from its protocol class, before any middleware runs, with ``text/plain``. :class:`EdgeRunner`
builds the server with a request handler whose ``handle_error`` answers with the JSON error shape
instead, and never echoes the offending bytes. It also sets aiohttp's keep-alive timer, which
closes a connection that has not delivered a complete request head in time — at its start
and between requests — so a partial request cannot hold a connection for minutes.

This file touches ``RequestHandler``/``Server``/``AppRunner._make_server``, aiohttp 3.x
internals: the version is pinned to 3.x in ``pyproject.toml``, and
``tests/agent/test_edges_http.py`` fails if they change under us.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from common.errors import KeyVaultError, ValidationError
from serverkit.edge import error_response

HEAD_TIMEOUT = 10.0  # seconds for a request head to arrive, and for an idle keep-alive
log = logging.getLogger("keyvault.http")


def parser_error(status: int) -> KeyVaultError:
    """The error for a request the HTTP parser refused (nothing of the request is quoted)."""
    if status >= 500:
        return KeyVaultError("internal error; see the server log")
    err = ValidationError(
        "the request could not be read: its request line, a header or the URL is malformed "
        "or longer than 8 KiB"
    )
    err.http_status = status
    err.code = "bad_request" if status == HTTPStatus.BAD_REQUEST else "invalid_request"
    return err


class _JsonErrorHandler(RequestHandler):
    """aiohttp's per-connection protocol, answering its own errors in our JSON shape."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The JSON error for a request aiohttp could not parse or serve; closes the connection."""
        if request.writer.output_size > 0:  # some of a response is out: nothing more to send
            raise ConnectionError("response already started; cannot send an error")
        log.warning(
            "refused a request from %s: HTTP %s (%s)", request.remote, status, type(exc).__name__
        )
        response = error_response(parser_error(status))
        response.force_close()
        return response


class _JsonErrorServer(Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class EdgeRunner(web.AppRunner):
    """``web.AppRunner`` with JSON parser errors and a request-head time limit.

    ``front``, when given, receives the application's request handler and returns the one the
    server calls instead: a fast path that hands everything it does not answer itself to the
    application (``agent.api.fastread``).
    """

    def __init__(
        self,
        app: web.Application,
        *,
        head_timeout: float = HEAD_TIMEOUT,
        front: Callable[[Handler], Handler] | None = None,
        **kw: Any,
    ):
        kw.setdefault("keepalive_timeout", head_timeout)
        super().__init__(app, **kw)
        self._front = front

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # same state, our protocol class
        if self._front is not None:
            server.request_handler = self._front(server.request_handler)
        return server
