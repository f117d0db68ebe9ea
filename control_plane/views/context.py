"""Typed app and request keys, and helpers the views share."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from aiohttp import web

from common.errors import ValidationError
from control_plane.runtime import ControlPlane
from control_plane.services.principal import Principal
from serverkit.body import MAX_BODY

CP = web.AppKey("control_plane", ControlPlane)
#: the address agents enroll through (the running gateway's URL), for enrollment answers
GATEWAY_ADDRESS = web.AppKey("gateway_address", str)
__all__ = ["CP", "GATEWAY_ADDRESS", "INFO", "MAX_BODY", "RequestInfo", "cp_of", "target", "who"]


@dataclass
class RequestInfo:
    """What the middleware learnt about the current request (for audit and metrics)."""

    route: str
    principal: Principal | None = None
    target: str | None = None


INFO = web.RequestKey("kv_cp_info", RequestInfo)


def cp_of(request: web.Request) -> ControlPlane:
    """The running control plane."""
    return request.app[CP]


def who(request: web.Request) -> Principal:
    """The authenticated operator (set by the middleware before any protected view runs)."""
    principal = request[INFO].principal
    assert principal is not None, "view reached without authentication"
    return principal


def target(request: web.Request, value: str) -> str:
    """Record the object the request is about (for the audit entry) and return it; an id with
    NUL or control characters is a 400 before anything looks it up."""
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValidationError("the id in the path must not contain NUL or control characters")
    request[INFO].target = value[:200]
    return value
