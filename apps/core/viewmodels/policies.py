"""Rotation policies: the list, and CRUD through sealed intents (the form is `policy_draft`).

A policy is made here and sealed with the organisation's metadata key (:mod:`apps.core.intents`):
the control plane sees only its interval, notice and target vaults, and agents run only what
verifies. So this is where every rule is checked before sealing — each field, the rules between
fields (notice shorter than the interval, target vaults that exist, settings the rotator knows)
— and every error is reported at once, each tagged with its field (``details["fields"]``). The
control plane checks again what it can see, and its ``ValidationError`` is raised as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any

from apps.core.filtering import matching
from apps.core.intents import IntentMaker, KeySource
from apps.core.names import find_vault
from apps.core.policy_draft import (
    DAY,
    ROTATORS,
    SEALED_NAME,
    PolicyDraft,
    fields_error,
    fmt_days,
    form_errors,
    parse_pairs,
    scope_ids,
)
from apps.core.viewmodels.base import Listener, ViewModel, when
from common import events
from common.errors import ConflictError, KeyVaultError, ValidationError

# the draft's names, still importable from here (the forms and other view models use them)
__all__ = ["ROTATORS", "PoliciesState", "PoliciesViewModel", "PolicyDraft", "PolicyRow",
           "form_errors", "parse_pairs"]  # fmt: skip


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
            interval_days=fmt_days((self.doc.get("interval_seconds") or 0) / DAY),
            notice_days=fmt_days((self.doc.get("notice_seconds") or 0) / DAY),
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
        refs = scope_ids(draft.scope)
        if refs and "scope" not in errors:
            ids, problem = await self._vault_ids(refs)
            if problem:
                errors["scope"] = problem
            elif not errors:
                fields["scope"] = {"vault_ids": ids}
        if errors:
            raise fields_error(errors)
        await self._check_name(fields["name"], policy_id)
        return fields

    async def _vault_ids(self, refs: list[str]) -> tuple[list[str], str]:
        """The ids of the vaults named (by name or id) in a scope, or the first problem."""
        vaults = [v async for v in self.client.iter_vaults()]
        ids: set[str] = set()
        for ref in refs:
            try:
                ids.add(str(find_vault(vaults, ref)["id"]))
            except KeyVaultError as exc:
                return [], exc.message
        return sorted(ids), ""

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
