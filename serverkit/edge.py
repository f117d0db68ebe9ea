"""The one place where an exception becomes an HTTP response, shared by both servers.

Each server's middleware does its own authentication, audit and metrics, and hands the call to
:func:`respond`, which runs it and turns any failure into ``{"error": {"code", "message"}}``
with the error's status; an unexpected exception is logged and shown only as "internal error".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from common.errors import KeyVaultError, NotFoundError, PayloadTooLargeError, ValidationError

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
Call = Callable[[], Awaitable[web.StreamResponse]]


def error_response(exc: KeyVaultError) -> web.Response:
    """The JSON error shape with the error's status (and ``Retry-After`` when it has one)."""
    headers = dict(SECURITY_HEADERS)
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int):
        headers["Retry-After"] = str(retry_after)
    return web.json_response(exc.to_json(), status=exc.http_status, headers=headers)


def http_exception_error(exc: web.HTTPException, server: str) -> KeyVaultError:
    """The KeyVault error for an aiohttp HTTP exception (unknown path, method, body size).

    ``server`` names the server in messages, e.g. ``"this agent"`` or ``"the control plane"``.
    """
    if exc.status == 404:
        return NotFoundError("no such endpoint; see /api/v1/openapi.json")
    if exc.status == 413:
        return PayloadTooLargeError(f"request body is larger than {server} accepts")
    err = ValidationError(exc.reason or "bad request")
    err.http_status = exc.status
    if exc.status == 405:
        err.code = "method_not_allowed"
        err.message = "method not allowed on this endpoint; see /api/v1/openapi.json"
    return err


async def respond(
    request: web.Request, call: Call, *, server: str, log: logging.Logger, log_name: str
) -> tuple[web.StreamResponse, KeyVaultError | None]:
    """Run ``call``; on failure, the error response and the error it shows (else None).

    ``server`` names the server in messages (``"this agent"``), ``log_name`` its log
    (``"agent"``: "internal error; see the agent log").
    """
    try:
        return await call(), None
    except KeyVaultError as exc:
        return error_response(exc), exc
    except web.HTTPException as exc:
        err = http_exception_error(exc, server)
        return error_response(err), err
    except Exception:
        route = request.match_info.route.name or "unknown"
        log.exception("unexpected error on %s %s", request.method, route)
        err = KeyVaultError(f"internal error; see the {log_name} log")
        return error_response(err), err
