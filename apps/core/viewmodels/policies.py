"""Rotation policies: the list, a form draft checked in full, and CRUD through sealed intents.

A policy is made here and sealed with the organisation's metadata key (:mod:`apps.core.intents`):
the control plane sees only its interval, notice and target vaults, and agents run only what
verifies. So this is where every rule is checked before sealing — each field, the rules between
fields (notice shorter than the interval, target vaults that exist, settings the rotator knows)
— and every error is reported at once, each tagged with its field (``details["fields"]``). The
control plane checks again what it can see, and its ``ValidationError`` is raised as it is.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

from apps.core.filtering import matching
from apps.core.intents import IntentMaker, KeySource
from apps.core.viewmodels.base import Listener, ViewModel, when
from common import events, globs
from common.errors import ConflictError, KeyVaultError, ValidationError

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


def _scope_ids(text: str) -> list[str]:
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
    def from_json(cls, doc: dict[str, Any], opened: dict[str, Any] | None = None) -> PolicyRow:
        """A row from a policy of the API or the stream; a sealed one shows ``opened`` (its
        intent's body, opened locally) or, without it, that it is sealed."""
        if doc.get("sealed"):
            doc = {**doc, **(opened or {"name": SEALED_NAME, "selector": {}, "rotator": {}})}
        selector = doc.get("selector") or {}
        parts = [f"name ~ {selector['name_glob']}"] if selector.get("name_glob") else []
        if selector.get("labels"):
            parts.append(_pairs_text(selector["labels"]))
        rotator = doc.get("rotator") or {}
        if doc.get("sealed") and opened is None:
            parts = ["sealed: import the metadata key to read it"]
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
    """List, create, change and delete rotation policies (sealed with the metadata key)."""

    def __init__(
        self,
        client: Any,
        on_change: Listener | None = None,
        *,
        key_source: KeySource = lambda: None,
    ) -> None:
        super().__init__(PoliciesState(), on_change)
        self.client = client
        self.intents = IntentMaker(key_source)

    def _row(self, doc: dict[str, Any]) -> PolicyRow:
        opened = self.intents.open(doc.get("intent")) if doc.get("sealed") else None
        return PolicyRow.from_json(doc, opened)

    async def refresh(self) -> None:
        """Load every policy (errors go to ``state.error``)."""

        async def work() -> None:
            docs = await self.client.list_policies()
            self._set(rows=_by_name([self._row(d) for d in docs]))

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

    async def _check_name(self, name: str, policy_id: str | None) -> None:
        """Names are unique in an organisation; only apps can tell, the control plane sees none."""
        for doc in await self.client.list_policies():
            row = self._row(doc)
            if row.id != policy_id and row.name == name:
                raise ConflictError(f"a policy named {name!r} already exists")

    async def checked(self, draft: PolicyDraft, policy_id: str | None = None) -> dict[str, Any]:
        """The draft's fields, every rule checked, including that each target vault exists and
        the name is free; one ValidationError with every problem otherwise."""
        try:
            fields = draft.validate()
        except ValidationError as exc:
            errors = dict(exc.details.get("fields") or {})
        else:
            errors = {}
        ids = _scope_ids(draft.scope)
        if ids and "scope" not in errors:
            known = {v["id"] async for v in self.client.iter_vaults()}
            missing = [i for i in ids if i not in known]
            if missing:
                errors["scope"] = f"no vault {missing[0]} in this organisation"
        if errors:
            raise fields_error(errors)
        await self._check_name(fields["name"], policy_id)
        return fields

    def row(self, policy_id: str) -> PolicyRow | None:
        """The loaded row of a policy, or None."""
        return next((r for r in self.state.rows if r.id == policy_id), None)

    def draft_of(self, policy_id: str) -> PolicyDraft:
        """The form fields of a loaded policy (an empty draft for an unknown id)."""
        row = self.row(policy_id)
        return row.draft() if row is not None else PolicyDraft()

    async def create(self, draft: PolicyDraft) -> PolicyRow:
        """Check the draft, seal it, create the policy and show it; raises KeyVaultError."""
        body = self.intents.policy(await self.checked(draft))
        row = self._row(await self.client.create_policy(body))
        self._upsert(row)
        return row

    async def _revision(self, policy_id: str) -> int:
        """The policy's current revision, from the server (an edit seals the next one)."""
        return int((await self.client.get_policy(policy_id))["version"])

    async def update(self, policy_id: str, draft: PolicyDraft) -> PolicyRow:
        """Check the draft and seal it as the policy's next revision; raises KeyVaultError."""
        revision = await self._revision(policy_id) + 1
        fields = await self.checked(draft, policy_id)
        body = self.intents.policy(fields, policy_id=policy_id, revision=revision)
        row = self._row(await self.client.update_policy(policy_id, body))
        self._upsert(row)
        return row

    async def delete(self, policy_id: str) -> None:
        """Delete a policy (a sealed deletion, its next revision); raises KeyVaultError."""
        doc = await self.client.get_policy(policy_id)
        if doc.get("sealed"):
            body = self.intents.delete_policy(policy_id, int(doc["version"]) + 1)
            await self.client.delete_policy(policy_id, body)
        else:
            await self.client.delete_policy(policy_id)
        self._set(rows=tuple(r for r in self.state.rows if r.id != policy_id))

    def apply_event(self, kind: str, data: dict[str, Any]) -> bool:
        """``policy.created`` / ``policy.updated`` / ``policy.deleted`` from the live stream."""
        if kind in (events.POLICY_CREATED.name, events.POLICY_UPDATED.name) and "id" in data:
            known = self.row(str(data["id"]))
            if known is not None and known.doc.get("version", 0) > data.get("version", 0):
                return False  # an older change arriving after a newer one
            self._upsert(self._row(data))
            return True
        if kind == events.POLICY_DELETED.name and self.row(str(data.get("id"))) is not None:
            self._set(rows=tuple(r for r in self.state.rows if r.id != data["id"]))
            return True
        return False

    def _upsert(self, row: PolicyRow) -> None:
        self._set(rows=_by_name([r for r in self.state.rows if r.id != row.id] + [row]))
