"""Rotation policies: the list, a form draft checked like the control plane checks it, CRUD.

The control plane stays the authority (``control_plane/services/policies.py``): the draft's
checks only let a form put a message next to the right field before anything is sent, and a
``ValidationError`` from the server is raised as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

from apps.core.filtering import matching
from apps.core.viewmodels.base import Listener, ViewModel, when
from common import events
from common.errors import ValidationError

DAY = 86400
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
            f"{name.replace('_', ' ')} must be from {_fmt(low / DAY)} to {_fmt(high / DAY)} days",
            name,
        )
    return seconds


def _fmt(days: float) -> str:
    return str(int(days)) if days == int(days) else f"{days:.6g}"


def _setting_value(text: str) -> str | int | bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if re.fullmatch(r"-?\d{1,9}", text):
        return int(text)
    return text


def _settings(rotator: str, text: str) -> dict[str, Any]:
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
            raise _fail(f"the {rotator} rotator has no setting {key!r}", "settings")
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
        if len(glob) > 200:
            raise _fail("the name glob must be at most 200 characters", "name_glob")
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
    value = text.strip()
    if not value or value.lower() == "all":
        return {"all": True}
    ids = sorted({part.strip() for part in value.split(",") if part.strip()})
    bad = [i for i in ids if not i.startswith("vlt_") or len(i) > 40]
    if bad:
        raise _fail(f"{bad[0]!r} is not a vault id (vlt_…); or write all", "scope")
    if len(ids) > 1000:
        raise _fail("at most 1000 vaults", "scope")
    return {"vault_ids": ids}


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
        """The API body; ValidationError with ``details["field"]`` naming the bad field."""
        name = self.name.strip()
        if not 1 <= len(name) <= 200:
            raise _fail("name must be 1 to 200 characters", "name")
        rotator = self.rotator.strip()
        if rotator not in ROTATORS:
            raise _fail(f"rotator must be one of {', '.join(ROTATORS)}", "rotator")
        return {
            "name": name,
            "selector": _selector(self.name_glob, self.labels),
            "interval_seconds": _days(self.interval_days, "interval_days", 60, 10 * 365 * DAY),
            "notice_seconds": _days(self.notice_days, "notice_days", 0, 365 * DAY, default=0),
            "rotator": {"type": rotator, "settings": _settings(rotator, self.settings)},
            "scope": _scope(self.scope),
        }


def _pairs_text(values: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) if isinstance(values, dict) else ""


def _scope_text(scope: Any) -> str:
    if not isinstance(scope, dict) or scope.get("all"):
        return "all"
    return ", ".join(str(i) for i in scope.get("vault_ids", ()))


def _days_of(seconds: Any) -> int | float:
    days = (seconds or 0) / DAY
    return int(days) if days == int(days) else round(days, 2)


@dataclass(frozen=True)
class PolicyRow:
    """One policy as the list shows it; ``doc`` is the server's JSON."""

    id: str
    name: str
    selector_text: str
    interval_days: int | float
    notice_days: int | float
    rotator: str
    scope_text: str
    updated_at: datetime | None
    doc: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def haystack(self) -> str:
        """What the filter searches: name, selector, rotator and vaults, lower-cased."""
        return f"{self.name}\n{self.selector_text}\n{self.rotator}\n{self.scope_text}".lower()

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PolicyRow:
        """A row from a policy of the API or the stream."""
        selector = doc.get("selector") or {}
        parts = [f"name ~ {selector['name_glob']}"] if selector.get("name_glob") else []
        if selector.get("labels"):
            parts.append(_pairs_text(selector["labels"]))
        rotator = doc.get("rotator") or {}
        return cls(
            id=str(doc["id"]),
            name=str(doc.get("name", "")),
            selector_text=" and ".join(parts),
            interval_days=_days_of(doc.get("interval_seconds")),
            notice_days=_days_of(doc.get("notice_seconds")),
            rotator=str(rotator.get("type", "")),
            scope_text=_scope_text(doc.get("scope")),
            updated_at=when(doc.get("updated_at")),
            doc=doc,
        )

    def draft(self) -> PolicyDraft:
        """The form fields that edit this policy."""
        selector = self.doc.get("selector") or {}
        rotator = self.doc.get("rotator") or {}
        settings = {
            k: str(v).lower() if isinstance(v, bool) else v
            for k, v in (rotator.get("settings") or {}).items()
        }
        return PolicyDraft(
            name=self.name,
            name_glob=str(selector.get("name_glob", "")),
            labels=_pairs_text(selector.get("labels")),
            interval_days=_fmt((self.doc.get("interval_seconds") or 0) / DAY),
            notice_days=_fmt((self.doc.get("notice_seconds") or 0) / DAY),
            rotator=self.rotator,
            settings=_pairs_text(settings),
            scope=self.scope_text,
        )


@dataclass(frozen=True)
class PoliciesState:
    """The organisation's policies, by name."""

    rows: tuple[PolicyRow, ...] = ()
    #: the rows matching ``filter`` (all of them when it is empty), in the same order
    visible: tuple[PolicyRow, ...] = ()
    filter: str = ""
    loading: bool = False
    error: str | None = None


def _by_name(rows: list[PolicyRow]) -> tuple[PolicyRow, ...]:
    return tuple(sorted(rows, key=lambda r: (r.name.lower(), r.id)))


class PoliciesViewModel(ViewModel[PoliciesState]):
    """List, create, change and delete rotation policies."""

    def __init__(self, client: Any, on_change: Listener | None = None) -> None:
        super().__init__(PoliciesState(), on_change)
        self.client = client

    async def refresh(self) -> None:
        """Load every policy (errors go to ``state.error``)."""

        async def work() -> None:
            docs = await self.client.list_policies()
            self._set(rows=_by_name([PolicyRow.from_json(d) for d in docs]))

        await self._load(work)

    def _set(self, **changes: Any) -> PoliciesState:
        """Every change of the rows or the filter keeps ``visible`` in step."""
        if "rows" in changes or "filter" in changes:
            rows = changes.get("rows", self.state.rows)
            text = changes.get("filter", self.state.filter)
            changes["visible"] = matching(rows, text, attrgetter("haystack"))
        return super()._set(**changes)

    def set_filter(self, text: str) -> None:
        """Show only policies whose name, selector, rotator or vaults contain ``text``."""
        self._set(filter=text)

    def row(self, policy_id: str) -> PolicyRow | None:
        """The loaded row of a policy, or None."""
        return next((r for r in self.state.rows if r.id == policy_id), None)

    def draft_of(self, policy_id: str) -> PolicyDraft:
        """The form fields of a loaded policy (an empty draft for an unknown id)."""
        row = self.row(policy_id)
        return row.draft() if row is not None else PolicyDraft()

    async def create(self, draft: PolicyDraft) -> PolicyRow:
        """Check the draft, create the policy and show it; raises KeyVaultError."""
        row = PolicyRow.from_json(await self.client.create_policy(draft.validate()))
        self._upsert(row)
        return row

    async def update(self, policy_id: str, draft: PolicyDraft) -> PolicyRow:
        """Check the draft and replace the policy's fields; raises KeyVaultError."""
        row = PolicyRow.from_json(await self.client.update_policy(policy_id, draft.validate()))
        self._upsert(row)
        return row

    async def delete(self, policy_id: str) -> None:
        """Delete a policy; raises KeyVaultError."""
        await self.client.delete_policy(policy_id)
        self._set(rows=tuple(r for r in self.state.rows if r.id != policy_id))

    def apply_event(self, kind: str, data: dict[str, Any]) -> bool:
        """``policy.created`` / ``policy.updated`` / ``policy.deleted`` from the live stream."""
        if kind in (events.POLICY_CREATED.name, events.POLICY_UPDATED.name) and "id" in data:
            known = self.row(str(data["id"]))
            if known is not None and known.doc.get("version", 0) > data.get("version", 0):
                return False  # an older change arriving after a newer one
            self._upsert(PolicyRow.from_json(data))
            return True
        if kind == events.POLICY_DELETED.name and self.row(str(data.get("id"))) is not None:
            self._set(rows=tuple(r for r in self.state.rows if r.id != data["id"]))
            return True
        return False

    def _upsert(self, row: PolicyRow) -> None:
        self._set(rows=_by_name([r for r in self.state.rows if r.id != row.id] + [row]))
