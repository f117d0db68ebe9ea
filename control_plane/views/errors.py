"""The one JSON error shape of both listeners (operator API and agent gateway), from serverkit."""

from __future__ import annotations

from aiohttp import web

from common.errors import KeyVaultError
from serverkit.edge import error_response
from serverkit.edge import http_exception_error as _http_exception_error

__all__ = ["error_response", "http_exception_error"]


def http_exception_error(exc: web.HTTPException) -> KeyVaultError:
    """The KeyVault error for an aiohttp HTTP exception, worded for the control plane."""
    return _http_exception_error(exc, "the control plane")
