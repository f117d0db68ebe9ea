"""The one JSON error shape of both listeners (operator API and agent gateway)."""

from __future__ import annotations

from aiohttp import web

from common.errors import KeyVaultError, NotFoundError, PayloadTooLargeError, ValidationError
from control_plane.errors import RateLimitedError

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def error_response(exc: KeyVaultError) -> web.Response:
    """``{"error": {"code", "message"}}`` with the error's status (and Retry-After on a 429)."""
    headers = dict(SECURITY_HEADERS)
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(exc.retry_after)
    return web.json_response(exc.to_json(), status=exc.http_status, headers=headers)


def http_exception_error(exc: web.HTTPException) -> KeyVaultError:
    """The KeyVault error for an aiohttp HTTP exception (unknown path, method, body size)."""
    if exc.status == 404:
        return NotFoundError("no such endpoint; see /api/v1/openapi.json")
    if exc.status == 413:
        return PayloadTooLargeError("request body is larger than the control plane accepts")
    err = ValidationError(exc.reason or "bad request")
    err.http_status = exc.status
    if exc.status == 405:
        err.code = "method_not_allowed"
        err.message = "method not allowed on this endpoint; see /api/v1/openapi.json"
    return err
