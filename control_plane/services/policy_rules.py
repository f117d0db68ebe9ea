"""The rules a policy's fields must meet in the control plane: every error at once.

A sealed policy (``common/intents.py``) shows the control plane only its clear header, so
:func:`check_intent` checks that (interval, notice, target vaults); :func:`validate` checks a
plaintext body from before sealing. Whatever is sealed is checked by the operator's app before
sealing and by the agent after opening.
"""

from __future__ import annotations

import re
from typing import Any

from common import intents
from common.errors import ValidationError

ROTATORS = ("random", "postgres", "command")
FIELDS = {"name", "selector", "interval_seconds", "notice_seconds", "rotator", "scope", "intent"}
CLEAR = ("interval_seconds", "notice_seconds", "scope")  # what a sealed policy shows in clear
MAX_POLICIES = 200  # per organisation, deleted (tombstones) included: one uplink frame holds all
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,64}$")
_SETTING_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# setting names that could carry secret material are refused outright; a postgres rotator's
# `connection` is only the *name* of a connection defined in the agent's own config
_FORBIDDEN = re.compile(r"pass|secret|token|key|credential|dsn|url|conn(?!ection$)", re.IGNORECASE)


def _check_name(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 200:
        raise ValidationError("name must be 1 to 200 characters")
    return value.strip()


def _check_selector(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) - {"labels", "name_glob"} or not value:
        raise ValidationError("selector must be an object with labels and/or name_glob")
    out: dict[str, Any] = {}
    if "labels" in value:
        labels = value["labels"]
        if (
            not isinstance(labels, dict)
            or len(labels) > 16
            or not all(
                isinstance(k, str) and _LABEL_RE.match(k) and isinstance(v, str) and len(v) <= 128
                for k, v in labels.items()
            )
        ):
            raise ValidationError("selector.labels must map up to 16 label names to strings")
        out["labels"] = labels
    if "name_glob" in value:
        glob = value["name_glob"]
        if not isinstance(glob, str) or not 1 <= len(glob) <= 200:
            raise ValidationError("selector.name_glob must be a 1-200 character glob")
        out["name_glob"] = glob
    return out


def _check_int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{field} must be a whole number from {low} to {high}")
    return value


def _check_rotator(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) - {"type", "settings"} or "type" not in value:
        raise ValidationError("rotator must be an object {type, settings}")
    if value["type"] not in ROTATORS:
        raise ValidationError(f"rotator.type must be one of {', '.join(ROTATORS)}")
    settings = value.get("settings", {})
    if not isinstance(settings, dict) or len(settings) > 20:
        raise ValidationError("rotator.settings must be an object of up to 20 settings")
    for key, item in settings.items():
        if not _SETTING_KEY.match(key):
            raise ValidationError(f"rotator setting {key!r} must be snake_case")
        if _FORBIDDEN.search(key):
            raise ValidationError(
                f"rotator setting {key!r} looks like a credential; policies hold no secrets "
                "(define connections in the agent's own config)"
            )
        if not isinstance(item, str | int | float | bool) or (
            isinstance(item, str) and len(item) > 200
        ):
            raise ValidationError(f"rotator setting {key!r} must be a short scalar")
    return {"type": value["type"], "settings": settings}


def _check_scope(value: Any) -> dict[str, Any]:
    if value == "all" or value == {"all": True}:
        return {"all": True}
    if isinstance(value, dict) and set(value) == {"vault_ids"}:
        ids = value["vault_ids"]
        if (
            isinstance(ids, list)
            and 1 <= len(ids) <= 1000
            and all(isinstance(i, str) and i.startswith("vlt_") and len(i) <= 40 for i in ids)
        ):
            return {"vault_ids": sorted(set(ids))}
    raise ValidationError('scope must be "all" or {"vault_ids": ["vlt_…", …]}')


def _collect(checks: dict[str, Any], doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Run every check on the fields given; (clean fields, {field: message}) — all errors."""
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key, check in checks.items():
        if key in doc:
            try:
                out[key] = check(doc[key])
            except ValidationError as exc:
                errors[key] = exc.message
    return out, errors


def fail(errors: dict[str, str]) -> ValidationError:
    """One ValidationError carrying every field's message (``details.fields``)."""
    first = next(iter(errors))
    text = "; ".join(f"{field}: {message}" for field, message in errors.items())
    return ValidationError(text, details={"field": first, "fields": errors})


def cross_check(fields: dict[str, Any], errors: dict[str, str]) -> None:
    """Rules between fields: notice shorter than the interval."""
    interval, notice = fields.get("interval_seconds"), fields.get("notice_seconds")
    if interval is not None and notice is not None and notice >= interval:
        errors.setdefault("notice_seconds", "notice_seconds must be shorter than interval_seconds")


def validate(doc: dict[str, Any], partial: bool) -> dict[str, Any]:
    """The policy fields of a plaintext create (all required) or update (any subset) body;
    every error at once."""
    checks = {
        "name": _check_name,
        "selector": _check_selector,
        "interval_seconds": lambda v: _check_int(v, "interval_seconds", 60, 10 * 365 * 86400),
        "notice_seconds": lambda v: _check_int(v, "notice_seconds", 0, 365 * 86400),
        "rotator": _check_rotator,
        "scope": _check_scope,
    }
    out, errors = _collect(checks, doc)
    if not partial:
        for key in sorted({"name", "selector", "interval_seconds", "rotator"} - set(doc)):
            errors[key] = f"{key} is required"
        out.setdefault("notice_seconds", 0)
        out.setdefault("scope", {"all": True})
    cross_check(out, errors)
    if errors:
        raise fail(errors)
    return out


def check_intent(doc: Any, kinds: tuple[str, ...]) -> intents.Header:
    """The clear header of a sealed policy intent, every rule the control plane can see checked
    (the rest is checked by the operator's app before sealing and by the agent after opening)."""
    try:
        intents.check_size(doc)
        header = intents.parse_header(doc)
    except ValidationError as exc:
        raise fail({"intent": exc.message}) from None
    if header.kind not in kinds:
        raise fail({"intent": f"this call takes a {' or '.join(kinds)} intent"})
    errors: dict[str, str] = {}
    cross_check(vars(header), errors)
    if errors:
        raise fail(errors)
    return header
