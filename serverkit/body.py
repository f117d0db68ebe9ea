"""Strict request-body and query parsing for both servers: clear 400s, never a 500.

Every text either server accepts (body strings and keys at any depth, query values) refuses NUL
and control characters: PostgreSQL text cannot hold NUL (it answered 500), and no e-mail, name or
description needs a terminal escape. Tab, newline and carriage return are allowed (multi-line
descriptions); a field named in ``free_text`` (a secret's value) is exempt. Every integer must fit
the widest column type (BIGINT); views check narrower columns against their own bounds.
"""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from common.errors import PayloadTooLargeError, ValidationError
from serverkit.jsonbody import check_fields, parse_object

MAX_BODY = web.AppKey("max_body", int)
MAX_QUERY_VALUE = 200
JSON = "application/json"
BODY_TIMEOUT = 30.0  # seconds for a request body to arrive once its head has
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


def check_values(value: Any, where: str, free_text: frozenset[str] = frozenset()) -> None:
    """Refuse control characters in every string and out-of-range integers, at any depth
    (top-level fields in ``free_text`` are not looked into)."""
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, bool) or value is None or isinstance(value, float):
        return
    elif isinstance(value, int):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ValidationError(f"{where} is out of range (a 64-bit whole number at most)")
    elif isinstance(value, dict):
        top = where == "body"
        for key, item in value.items():
            check_text(key, f"field name {key[:40]!r}")
            if not (top and key in free_text):
                check_values(item, key if top else f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_values(item, f"{where}[{i}]")


class UnsupportedMediaTypeError(ValidationError):
    """415: a body that is not ``application/json``."""

    code = "unsupported_media_type"
    http_status = 415


class RequestTimeoutError(ValidationError):
    """408: the body was not sent in time."""

    code = "request_timeout"
    http_status = 408


def check_media_type(request: web.Request) -> None:
    """A 415 unless the request says its body is JSON in UTF-8."""
    charset = (request.charset or "utf-8").lower()
    if request.content_type != JSON or charset not in ("utf-8", "utf8"):
        sent = request.headers.get("Content-Type", "no Content-Type")[:80]
        raise UnsupportedMediaTypeError(
            f"request bodies must be sent as {JSON} (UTF-8), not {sent!r}; "
            f"set 'Content-Type: {JSON}'"
        )


async def json_object(
    request: web.Request,
    allowed: set[str],
    required: frozenset[str] = frozenset(),
    *,
    free_text: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` keys and every ``required`` one, no
    control characters in its text (but in ``free_text`` fields) and no integer beyond BIGINT.

    Only ``application/json`` (UTF-8) is read: any other media type is a 415 before the body is
    looked at, so a form or ``text/plain`` can never write anything. The body must arrive within
    :data:`BODY_TIMEOUT` seconds (408 otherwise).
    """
    check_media_type(request)
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLargeError(
            f"request body is larger than the limit of {request.app[MAX_BODY]} bytes"
        ) from None
    except TimeoutError:
        raise RequestTimeoutError(
            f"the request body did not arrive within {BODY_TIMEOUT:.0f} seconds"
        ) from None
    doc = parse_object(raw)
    check_fields(doc, allowed, required)
    check_values(doc, "body", free_text)
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
        if not value:
            raise ValidationError(f"query parameter {key} is empty; leave it out instead")
        if len(value) > MAX_QUERY_VALUE:
            raise ValidationError(f"query parameter {key} is longer than {MAX_QUERY_VALUE}")
        check_text(value, f"query parameter {key}")
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
