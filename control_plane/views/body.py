"""Strict request-body and query parsing: clear 400s, never a 500.

Every text the control plane accepts (body strings and keys, query values, path ids) refuses NUL
and control characters: PostgreSQL text cannot hold NUL (it answered 500), and no e-mail, name or
description needs a terminal escape. Tab, newline and carriage return are the only exceptions,
for multi-line descriptions. Every integer is checked against the database's column types.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from aiohttp import web

from common.errors import PayloadTooLargeError, ValidationError
from common.jsonbody import check_fields, parse_object
from control_plane.views.context import MAX_BODY

INT32_MAX = 2**31 - 1  # INTEGER columns (sequence numbers, versions, counts)
INT64_MAX = 2**63 - 1  # BIGINT: nothing larger can be stored anywhere
ALLOWED_CONTROLS = frozenset("\t\n\r")
CONTROL_HINT = "must not contain NUL or other control characters"


def has_control(text: str) -> bool:
    """Whether ``text`` holds a control character other than tab, newline or return."""
    return any(unicodedata.category(c) == "Cc" and c not in ALLOWED_CONTROLS for c in text)


def check_text(value: str, what: str) -> str:
    """``value`` unless it holds NUL or a control character (then a 400 naming ``what``)."""
    if has_control(value):
        raise ValidationError(f"{what} {CONTROL_HINT}")
    return value


def _check_values(value: Any, where: str) -> None:
    """Refuse control characters in every string and out-of-range integers, at any depth."""
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, bool) or value is None or isinstance(value, float):
        return
    elif isinstance(value, int):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ValidationError(f"{where} is out of range (a 64-bit whole number at most)")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"field name {key[:40]!r}")
            _check_values(item, key if where == "body" else f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_values(item, f"{where}[{i}]")


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
    _check_values(doc, "body")
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
        if len(value) > 200:
            raise ValidationError(f"query parameter {key} is longer than 200 characters")
        check_text(value, f"query parameter {key}")
    return values


def query_int(values: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within bounds."""
    raw = values.get(key)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise ValidationError(f"query parameter {key} must be a whole number from {low} to {high}")
    return int(raw)
