"""Rotation policies on the agent: parsing what the control plane sent, and selector evaluation.

A policy governs a secret when its scope includes this agent's vault and its selector matches
(``labels`` all equal AND ``name_glob`` matches, each only when given); the matching policy with
the lowest id wins. Globs follow :mod:`common.globs`: ``*`` one segment, ``**`` any depth,
``?`` one character, with limits on length and wildcards.

:func:`assign` evaluates every policy against every secret in one go: all globs (and the
agent's protected-name globs) are one RE2 set matched once per name, in time linear in the
name (:mod:`agent.globmatch`: no backtracking, whatever the control plane sent), and each label
pair is a substring test on each stored labels text (labels are stored as ``json.dumps``
output, so ``"key": "value"`` occurs only as that pair). The evaluation checks a time budget as
it goes (:class:`BudgetExceededError`); callers run it off the event loop.
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from agent.globmatch import Glob, GlobSet
from common import globs as globgrammar
from common.errors import KeyVaultError

log = logging.getLogger("keyvault.agent.rotation")


BUDGET_CHUNK = 4096  # names matched between two looks at the time budget


class BudgetExceededError(KeyVaultError):
    """Policy evaluation ran past its time budget (the pass is skipped and alerted)."""

    code = "rotation_budget_exceeded"
    http_status = 503


@dataclass(frozen=True)
class Policy:
    """One rotation policy as the agent uses it."""

    id: str
    name: str
    version: int
    labels: tuple[tuple[str, str], ...]
    name_glob: str | None
    interval_seconds: int
    notice_seconds: int
    rotator: dict[str, Any]
    all_vaults: bool
    vault_ids: frozenset[str]

    @classmethod
    def parse(cls, doc: Any) -> Policy | None:
        """A policy from the ``policies`` frame (flat or with a ``body``); None if unusable."""
        if not isinstance(doc, dict):
            return None
        body: dict[str, Any] = doc["body"] if isinstance(doc.get("body"), dict) else doc
        try:
            pid = doc["id"]
            selector = body.get("selector") or {}
            labels = selector.get("labels") or {}
            glob = selector.get("name_glob")
            interval = body["interval_seconds"]
            rotator = body.get("rotator") or {"type": "random", "settings": {}}
            scope = body.get("scope") or {"all": True}
            if not isinstance(pid, str) or not isinstance(labels, dict):
                return None
            if glob not in (None, "") and globgrammar.problem(glob) is not None:
                return None
            if type(interval) is not int or interval <= 0 or not isinstance(rotator, dict):
                return None
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
                return None
            return cls(
                id=pid,
                name=str(doc.get("name", "")),
                version=int(doc.get("version") or 0),
                labels=tuple(sorted(labels.items())),
                name_glob=glob or None,
                interval_seconds=interval,
                notice_seconds=int(body.get("notice_seconds") or 0),
                rotator=rotator,
                all_vaults=bool(scope.get("all")),
                vault_ids=frozenset(str(v) for v in scope.get("vault_ids") or ()),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def in_scope(self, vault_id: str | None) -> bool:
        """Whether this policy applies to the agent's vault."""
        return self.all_vaults or (vault_id is not None and vault_id in self.vault_ids)

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        """Whether the selector matches one secret (the slow path, for a single secret)."""
        for key, value in self.labels:
            if labels.get(key) != value:
                return False
        if self.name_glob is not None:
            return Glob(self.name_glob).fullmatch(name)
        return True


def parse_all(policies: Any, vault_id: str | None) -> list[Policy]:
    """The usable policies in scope for ``vault_id``, lowest id first."""
    out: list[Policy] = []
    for doc in policies if isinstance(policies, list) else []:
        policy = Policy.parse(doc)
        if policy is None:
            log.warning("ignored a rotation policy that is not valid")
            continue
        if policy.in_scope(vault_id):
            out.append(policy)
    out.sort(key=lambda p: p.id)
    return out


def governing(policies: Sequence[Policy], name: str, labels: dict[str, str]) -> Policy | None:
    """The policy that governs one secret (lowest id among the matches), or None."""
    for policy in policies:  # sorted by id
        if policy.matches(name, labels):
            return policy
    return None


def _pair_hits(
    pairs: set[tuple[str, str]], labels: Sequence[str]
) -> dict[tuple[str, str], set[int]]:
    """For each label pair, the indexes of the labels texts holding it: one regex scan over
    all texts joined, for every pair at once."""
    found: dict[tuple[str, str], set[int]] = {pair: set() for pair in pairs}
    needles = {json.dumps(k) + ": " + json.dumps(v): (k, v) for k, v in pairs}
    rx = re.compile("|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)))
    text = "\n".join(labels)
    starts = list(accumulate(map(len, labels), initial=0))  # cumulated lengths ...
    starts = [at + i for i, at in enumerate(starts)]  # ... plus one newline per text before
    for m in rx.finditer(text):
        found[needles[m.group()]].add(bisect.bisect_right(starts, m.start()) - 1)
    return found


def _glob_hits(
    globs: Sequence[str], names: Sequence[str], deadline: float | None
) -> list[set[int]]:
    """For each glob, the indexes of the names it matches: one RE2 set call per name, linear
    in the name's length whatever the globs are."""
    found: list[set[int]] = [set() for _ in globs]
    if not globs:
        return found
    matcher = GlobSet(globs)
    for start in range(0, len(names), BUDGET_CHUNK):
        _check_budget(deadline)
        for i, hits in enumerate(map(matcher.which, names[start : start + BUDGET_CHUNK]), start):
            for g in hits:
                found[g].add(i)
    return found


def _check_budget(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise BudgetExceededError(
            "evaluating the rotation policies took longer than rotation.evaluation_budget_seconds"
        )


def assign(
    policies: Sequence[Policy],
    names: Sequence[str],
    labels: Sequence[str],
    *,
    protected: Sequence[str] = (),
    deadline: float | None = None,
) -> list[Policy | None]:
    """For each secret (``names[i]``, stored labels JSON ``labels[i]``), its governing policy.

    Names matching a ``protected`` glob are governed by none; past ``deadline`` (a
    ``time.monotonic()`` value) the evaluation stops with :class:`BudgetExceededError`.
    """
    result: list[Policy | None] = [None] * len(names)
    if not policies or not names:
        return result
    pairs = {p for q in policies for p in q.labels}
    by_pair = _pair_hits(pairs, labels) if pairs else {}
    _check_budget(deadline)
    globs = sorted({p.name_glob for p in policies if p.name_glob is not None})
    hits = _glob_hits([*globs, *protected], names, deadline)
    by_glob = dict(zip(globs, hits, strict=False))
    fenced: set[int] = set().union(*hits[len(globs) :])
    unassigned = len(names) - len(fenced)
    for policy in policies:  # lowest id first: the first to claim a secret keeps it
        _check_budget(deadline)
        matched: set[int] | None = None
        for pair in policy.labels:
            matched = by_pair[pair] if matched is None else matched & by_pair[pair]
        if policy.name_glob is not None:
            globbed = by_glob[policy.name_glob]
            matched = globbed if matched is None else matched & globbed
        candidates = range(len(names)) if matched is None else matched
        for i in candidates:
            if result[i] is None and i not in fenced:
                result[i] = policy
                unassigned -= 1
        if unassigned <= 0:
            break
    return result
