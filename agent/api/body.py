"""Strict request-body and query parsing: clear 400s, never a 500."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from common.errors import PayloadTooLargeError, ValidationError

MAX_DEPTH = 32
MAX_BODY = web.AppKey("max_body", int)


def _depth_ok(raw: bytes) -> bool:
    """Reject absurd nesting before the parser recurses into it."""
    depth = 0
    in_string = False
    escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


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
    if not raw.strip():
        raise ValidationError("request body must be a JSON object")
    if not _depth_ok(raw):
        raise ValidationError(f"request body nests deeper than {MAX_DEPTH} levels")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("request body is not valid JSON (UTF-8)") from None
    if not isinstance(doc, dict):
        raise ValidationError("request body must be a JSON object")
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(
            "request body holds a string that is not valid Unicode (a lone surrogate)"
        ) from None
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    missing = sorted(required - set(doc))
    if missing:
        raise ValidationError(f"missing required field(s): {', '.join(missing)}")
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
