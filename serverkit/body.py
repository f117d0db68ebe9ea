"""Strict request-body and query parsing for both servers: clear 400s, never a 500."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from common.errors import PayloadTooLargeError, ValidationError
from serverkit.jsonbody import check_fields, parse_object

MAX_BODY = web.AppKey("max_body", int)
MAX_QUERY_VALUE = 200


async def json_object(
    request: web.Request, allowed: set[str], required: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` keys and every ``required`` one."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLargeError(
            f"request body is larger than the limit of {request.app[MAX_BODY]} bytes"
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


def string(doc: dict[str, Any], key: str, *, low: int = 1, high: int = 200) -> str | None:
    """``doc[key]`` as a string of bounded length, None when absent, else a 400."""
    if key not in doc:
        return None
    value = doc[key]
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise ValidationError(f"{key} must be a string of {low} to {high} characters")
    return value


def reject_unknown_query(request: web.Request, allowed: set[str]) -> None:
    """A 400 for query parameters the endpoint does not take."""
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise ValidationError(f"unknown query parameter(s): {', '.join(unknown)}")


def query(request: web.Request, allowed: set[str]) -> dict[str, str]:
    """The query parameters, refusing unknown, over-long or NUL-holding ones."""
    reject_unknown_query(request, allowed)
    values = {k: request.query[k] for k in allowed if k in request.query}
    for key, value in values.items():
        if len(value) > MAX_QUERY_VALUE or "\x00" in value:
            raise ValidationError(f"query parameter {key} is too long or malformed")
    return values


def query_int(values: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within bounds (``values`` is ``request.query`` or :func:`query`)."""
    raw = values.get(key)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise ValidationError(f"query parameter {key} must be a whole number from {low} to {high}")
    return int(raw)


def query_bool(values: Mapping[str, str], key: str) -> bool:
    """A boolean query parameter (true/false), false when absent."""
    raw = values.get(key, "false").lower()
    if raw not in ("true", "false"):
        raise ValidationError(f"query parameter {key} must be true or false")
    return raw == "true"
