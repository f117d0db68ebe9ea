"""Typed app keys and per-request helpers shared by the views and the middleware."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agent.assembly import Agent
from agent.auth import Token

AGENT = web.AppKey("agent", Agent)


@dataclass
class RequestAudit:
    """What the audit entry of the current request will say."""

    op: str
    target: str | None = None
    actor: str | None = None
    token: Token | None = None
    extra: dict[str, Any] | None = None  # more for the outcome entry (never a secret)


AUDIT = web.RequestKey("kv_audit", RequestAudit)


def token_of(request: web.Request) -> Token:
    """The authenticated token (set by the middleware before any protected view runs)."""
    info: RequestAudit = request[AUDIT]
    assert info.token is not None, "view reached without authentication"
    return info.token


def audit_target(request: web.Request, target: str) -> None:
    """Record which object the request is about, for its audit entry."""
    request[AUDIT].target = target[:200]
