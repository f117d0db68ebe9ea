"""Strict JSON request bodies for both servers: clear 400s, never a parser crash.

Pure functions over bytes (no server framework), so the agent and the control plane share one
definition of "a valid body"; `serverkit.body` wraps them around the aiohttp request.
"""

from __future__ import annotations

import json
from typing import Any

from common.errors import ValidationError

MAX_DEPTH = 32


def too_deep(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether ``raw`` nests arrays/objects deeper than ``limit`` (checked before parsing)."""
    depth, in_string, escaped = 0, False, False
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
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def parse_object(raw: bytes | str) -> dict[str, Any]:
    """A JSON object from raw bytes, or a ValidationError that says what is wrong."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if not data.strip():
        raise ValidationError("request body must be a JSON object")
    if too_deep(data):
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
        raise ValidationError(
            "request body holds a string that is not valid Unicode (a lone surrogate)"
        ) from None
    return doc


def check_fields(
    doc: dict[str, Any], allowed: set[str], required: frozenset[str] = frozenset()
) -> None:
    """A 400 naming unknown or missing fields."""
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    missing = sorted(required - set(doc))
    if missing:
        raise ValidationError(f"missing required field(s): {', '.join(missing)}")
