"""A policy form's fields as typed (:class:`PolicyDraft`) and every rule they must meet.

Used by the TUI form, the desktop dialog and ``keyvault policies`` alike (through
:mod:`apps.core.viewmodels.policies`): each field checked, the rules between fields, and every
error at once with the field it belongs to (``details["fields"]``), before anything is sealed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common import globs
from common.errors import KeyVaultError, ValidationError

DAY = 86400
SEALED_NAME = "(sealed policy)"
ROTATORS = ("random", "postgres", "command")
_GENERATOR = {"length", "classes", "min_per_class", "exclude_lookalikes", "encoding", "bytes"}
# the settings each rotator understands (docs/rotation.md) and the ones it needs
ROTATOR_SETTINGS: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "random": (frozenset(_GENERATOR), ()),
    "postgres": (
        frozenset({"connection", "role", "alternate_role", "length"}),
        ("connection", "role"),
    ),
    "command": (frozenset(_GENERATOR | {"command"}), ("command",)),
}
_LABEL_KEY = re.compile(r"^[A-Za-z0-9_.\-/]{1,64}$")
_SETTING_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_FORBIDDEN = re.compile(r"pass|secret|token|key|credential|dsn|url|conn(?!ection$)", re.IGNORECASE)


def _fail(message: str, name: str) -> ValidationError:
    return ValidationError(message, details={"field": name})


def parse_pairs(text: str, name: str) -> dict[str, str]:
    """``"k=v, k=v"`` as a dict; ValidationError tagged ``name`` for an item without ``=``."""
    pairs: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _fail(f"{item!r} is not key=value", name)
        pairs[key.strip()] = value.strip()
    return pairs


def _days(text: str, name: str, low: int, high: int, default: int | None = None) -> int:
    """Days (decimals allowed) as whole seconds within ``low``..``high`` seconds."""
    if not text.strip() and default is not None:
        return default
    try:
        seconds = round(float(text.strip()) * DAY)
    except ValueError:
        raise _fail(f"{name.replace('_', ' ')} must be a number of days", name) from None
    if not low <= seconds <= high:
        raise _fail(
            f"{name.replace('_', ' ')} must be from {fmt_days(low / DAY)} to {fmt_days(high / DAY)} days",
            name,
        )
    return seconds


def fmt_days(days: float) -> str:
    return str(int(days)) if days == int(days) else f"{days:.6g}"


def _setting_value(text: str) -> str | int | bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if re.fullmatch(r"-?\d{1,9}", text):
        return int(text)
    return text


def _settings(rotator: str, text: str) -> dict[str, Any]:
    if rotator not in ROTATOR_SETTINGS:
        return {}  # the rotator field carries the error
    raw = parse_pairs(text, "settings")
    if len(raw) > 20:
        raise _fail("at most 20 settings", "settings")
    known, required = ROTATOR_SETTINGS[rotator]
    for key, value in raw.items():
        if not _SETTING_KEY.match(key):
            raise _fail(f"setting {key!r} must be snake_case", "settings")
        if _FORBIDDEN.search(key):
            raise _fail(
                f"setting {key!r} looks like a credential; policies hold no secrets "
                "(define connections in the agent's own config)",
                "settings",
            )
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            hint = (
                f" (did you mean {near[0]!r}?)"
                if near
                else f"; it knows {', '.join(sorted(known))}"
            )
            raise _fail(f"the {rotator} rotator has no setting {key!r}{hint}", "settings")
        if len(value) > 200:
            raise _fail(f"setting {key!r} must be at most 200 characters", "settings")
    missing = [key for key in required if not raw.get(key)]
    if missing:
        raise _fail(f"the {rotator} rotator needs {', '.join(missing)}", "settings")
    return {key: _setting_value(value) for key, value in raw.items()}


def _selector(name_glob: str, labels_text: str) -> dict[str, Any]:
    selector: dict[str, Any] = {}
    glob = name_glob.strip()
    if glob:
        found = globs.problem(glob)
        if found is not None:
            raise _fail(found, "name_glob")
        selector["name_glob"] = glob
    labels = parse_pairs(labels_text, "labels")
    if labels:
        if len(labels) > 16:
            raise _fail("at most 16 labels", "labels")
        for key, value in labels.items():
            if not _LABEL_KEY.match(key):
                raise _fail(f"label {key!r} must be 1-64 of A-Z a-z 0-9 _ . - /", "labels")
            if len(value) > 128:
                raise _fail(f"label {key!r} must be at most 128 characters", "labels")
        selector["labels"] = labels
    if not selector:
        raise _fail("give a name glob and/or labels to select secrets", "name_glob")
    return selector


def _scope(text: str) -> dict[str, Any]:
    """``all``, or vault names and/or ids as typed (the view model resolves names to ids
    against the fleet, so a name that matches no vault is shown next to this field too)."""
    value = text.strip()
    if not value or value.lower() == "all":
        return {"all": True}
    refs = scope_ids(value)
    bad = [r for r in refs if len(r) > 100 or not r.isprintable()]
    if bad:
        raise _fail(f"{bad[0][:40]!r} is not a vault name or id; or write all", "scope")
    if len(refs) > 1000:
        raise _fail("at most 1000 vaults", "scope")
    return {"vault_ids": refs}


def scope_ids(text: str) -> list[str]:
    """The vault names or ids of a scope field (none for ``all``), sorted, each once."""
    value = text.strip()
    if not value or value.lower() == "all":
        return []
    return sorted({part.strip() for part in value.split(",") if part.strip()})


@dataclass(frozen=True)
class PolicyDraft:
    """A policy form's fields, as typed (strings)."""

    name: str = ""
    name_glob: str = ""
    labels: str = ""
    interval_days: str = "30"
    notice_days: str = "0"
    rotator: str = "random"
    settings: str = ""
    scope: str = "all"

    def validate(self) -> dict[str, Any]:
        """The policy's fields; one ValidationError with every problem, ``details["fields"]``
        mapping each bad field to its message (``details["field"]``: the first of them)."""
        rotator = self.rotator.strip()
        checks: dict[str, Callable[[], Any]] = {
            "name": lambda: _name(self.name),
            "selector": lambda: _selector(self.name_glob, self.labels),
            "interval_seconds": lambda: _days(self.interval_days, "interval_days", 60,
                                              10 * 365 * DAY),
            "notice_seconds": lambda: _days(self.notice_days, "notice_days", 0, 365 * DAY,
                                            default=0),
            "rotator": lambda: {"type": _rotator(rotator),
                                "settings": _settings(rotator, self.settings)},
            "scope": lambda: _scope(self.scope),
        }  # fmt: skip
        out: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for key, check in checks.items():
            try:
                out[key] = check()
            except ValidationError as exc:
                errors.setdefault(str(exc.details.get("field", key)), exc.message)
        interval, notice = out.get("interval_seconds"), out.get("notice_seconds")
        if interval is not None and notice is not None and notice >= interval:
            errors.setdefault("notice_days", "notice must be shorter than the interval")
        if errors:
            raise fields_error(errors)
        return out


# the control plane's names for what the form calls otherwise
_FORM_FIELD = {"interval_seconds": "interval_days", "notice_seconds": "notice_days",
               "selector": "name_glob", "rotator": "rotator"}  # fmt: skip


def form_errors(exc: KeyVaultError) -> dict[str, str]:
    """Every problem of a failed save keyed by the form field it goes next to (``""``: the
    form as a whole), whether apps/core or the control plane found it."""
    fields = exc.details.get("fields") if exc.details else None
    if not isinstance(fields, dict):
        one = exc.details.get("field") if exc.details else None
        fields = {str(one): exc.message} if isinstance(one, str) else {"": exc.message}
    out: dict[str, str] = {}
    for key, message in fields.items():
        name = _FORM_FIELD.get(str(key), str(key))
        name = name if name in PolicyDraft.__dataclass_fields__ else ""
        out[name] = f"{out[name]}; {message}" if name in out else str(message)
    return out


def fields_error(errors: dict[str, str]) -> ValidationError:
    """One ValidationError for several fields: a one-line message naming each, and the map."""
    text = "; ".join(f"{field.replace('_', ' ')}: {message}" for field, message in errors.items())
    return ValidationError(text, details={"field": next(iter(errors)), "fields": dict(errors)})


def _name(text: str) -> str:
    name = text.strip()
    if not 1 <= len(name) <= 200:
        raise _fail("name must be 1 to 200 characters", "name")
    return name


def _rotator(rotator: str) -> str:
    if rotator not in ROTATORS:
        raise _fail(f"rotator must be one of {', '.join(ROTATORS)}", "rotator")
    return rotator
