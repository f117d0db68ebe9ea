"""Strict request-body and query parsing: clear 400s, never a 500."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from common.errors import PayloadTooLargeError, ValidationError
from control_plane.views.context import MAX_BODY

MAX_DEPTH = 32


def _too_deep(raw: bytes) -> bool:
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def parse_object(raw: bytes | str) -> dict[str, Any]:
    """A JSON object from raw bytes, or a 400 that says what is wrong."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if not data.strip():
        raise ValidationError("request body must be a JSON object")
    if _too_deep(data):
        raise ValidationError(f"request body nests deeper than {MAX_DEPTH} levels")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise ValidationError("request body is not valid JSON (UTF-8)") from None
    if not isinstance(doc, dict):
        raise ValidationError("request body must be a JSON object")
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("request body holds a lone surrogate") from None
    return doc


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
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    missing = sorted(required - set(doc))
    if missing:
        raise ValidationError(f"missing required field(s): {', '.join(missing)}")
    return doc


def string(doc: dict[str, Any], key: str, *, low: int = 1, high: int = 200) -> str | None:
    """``doc[key]`` as a string of bounded length, None when absent, else a 400."""
    if key not in doc:
        return None
    value = doc[key]
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise ValidationError(f"{key} must be a string of {low} to {high} characters")
    return value


def query(request: web.Request, allowed: set[str]) -> dict[str, str]:
    """The query parameters, refusing unknown ones."""
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise ValidationError(f"unknown query parameter(s): {', '.join(unknown)}")
    values = {k: request.query[k] for k in allowed if k in request.query}
    for key, value in values.items():
        if len(value) > 200 or "\x00" in value:
            raise ValidationError(f"query parameter {key} is too long or malformed")
    return values


def query_int(values: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within bounds."""
    raw = values.get(key)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise ValidationError(f"query parameter {key} must be a whole number from {low} to {high}")
    return int(raw)
