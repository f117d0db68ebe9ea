"""Strict request-body and query parsing: clear 400s, never a 500."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from common.errors import PayloadTooLargeError, ValidationError
from common.jsonbody import check_fields, parse_object

MAX_BODY = web.AppKey("max_body", int)


async def json_object(
    request: web.Request, allowed: set[str], required: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` keys and every ``required`` one."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLargeError(
            f"request body is larger than this agent's limit of {request.app[MAX_BODY]} bytes"
        ) from None
    doc = parse_object(raw)
    check_fields(doc, allowed, required)
    return doc


def typed(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``doc[key]`` if present and of ``kind`` (bool is never an int), else None or a 400."""
    if key not in doc:
        return None
    value = doc[key]
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ValidationError(f"{key} must be {what}")
    if not isinstance(value, kind):
        raise ValidationError(f"{key} must be {what}")
    return value


def query_int(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within bounds."""
    raw = request.query.get(key)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ValidationError(f"query parameter {key} must be a whole number from {low} to {high}")
    return int(raw)


def query_bool(request: web.Request, key: str) -> bool:
    """A boolean query parameter (true/false)."""
    raw = request.query.get(key, "false").lower()
    if raw not in ("true", "false"):
        raise ValidationError(f"query parameter {key} must be true or false")
    return raw == "true"


def reject_unknown_query(request: web.Request, allowed: set[str]) -> None:
    """A 400 for query parameters the endpoint does not take."""
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise ValidationError(f"unknown query parameter(s): {', '.join(unknown)}")
