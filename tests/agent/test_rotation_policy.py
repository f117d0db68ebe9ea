"""Rotation policies on the agent: parsing, scope, selector evaluation (single and bulk)."""

from __future__ import annotations

import json
import random
from typing import Any

from agent.rotation.policy import Policy, assign, governing, parse_all

VAULT = "vlt_aaaaaaaaaaaaaaaaaaaaaaaaaa"


def doc(pid: str, *, labels: dict[str, str] | None = None, glob: str | None = None,
        scope: dict[str, Any] | None = None, body: bool = False) -> dict[str, Any]:  # fmt: skip
    selector: dict[str, Any] = {}
    if labels is not None:
        selector["labels"] = labels
    if glob is not None:
        selector["name_glob"] = glob
    inner = {
        "selector": selector,
        "interval_seconds": 3600,
        "notice_seconds": 60,
        "rotator": {"type": "random", "settings": {}},
        "scope": scope or {"all": True},
    }
    if body:
        return {"id": pid, "name": pid, "version": 1, "body": inner}
    return {"id": pid, "name": pid, "version": 1, **inner}


def test_parse_flat_and_body_forms_and_skip_invalid() -> None:
    policies = parse_all(
        [doc("pol_b", glob="a/*"), doc("pol_a", labels={"t": "x"}, body=True), {"id": 3}, "x"],
        VAULT,
    )
    assert [p.id for p in policies] == ["pol_a", "pol_b"]  # sorted, invalid ones dropped
    assert policies[0].labels == (("t", "x"),)
    assert policies[1].name_glob == "a/*"


def test_scope_by_vault_id() -> None:
    mine = doc("pol_1", scope={"vault_ids": [VAULT]})
    other = doc("pol_2", scope={"vault_ids": ["vlt_other"]})
    everyone = doc("pol_3", scope={"all": True})
    assert [p.id for p in parse_all([mine, other, everyone], VAULT)] == ["pol_1", "pol_3"]
    assert [p.id for p in parse_all([mine, other, everyone], None)] == ["pol_3"]


def test_selector_is_and_of_labels_and_glob() -> None:
    p = Policy.parse(doc("pol_1", labels={"team": "billing", "env": "prod"}, glob="prod/db/*"))
    assert p is not None
    both = {"team": "billing", "env": "prod", "x": "y"}
    assert p.matches("prod/db/main", both)
    assert not p.matches("prod/db/main/deeper", both)  # * is one segment
    assert not p.matches("prod/web/main", both)
    assert not p.matches("prod/db/main", {"team": "billing"})
    deep = Policy.parse(doc("pol_2", glob="prod/**"))
    assert deep is not None and deep.matches("prod/a/b/c", {})
    q = Policy.parse(doc("pol_3", glob="db?"))
    assert q is not None and q.matches("db1", {}) and not q.matches("db/", {})


def test_lowest_policy_id_wins() -> None:
    policies = parse_all([doc("pol_b", glob="**"), doc("pol_a", labels={"t": "x"})], VAULT)
    assert governing(policies, "n", {"t": "x"}).id == "pol_a"  # type: ignore[union-attr]
    assert governing(policies, "n", {"t": "y"}).id == "pol_b"  # type: ignore[union-attr]
    assert governing(parse_all([doc("pol_a", glob="a")], VAULT), "b", {}) is None


def test_bulk_assign_agrees_with_one_by_one() -> None:
    rng = random.Random(7)
    segs = ["prod", "dev", "db", "web", "x.y", "a-b", "c_d"]
    names = sorted({"/".join(rng.choice(segs) for _ in range(rng.randint(1, 4))) + str(i)
                    for i in range(600)})  # fmt: skip
    label_values = ["billing", "ops", 'quo"te', "ünï", "x y"]
    labels = [
        {
            k: rng.choice(label_values)
            for k in rng.sample(["team", "env", "tier"], rng.randint(0, 3))
        }
        for _ in names
    ]
    docs = [
        doc("pol_01", labels={"team": "billing"}, glob="prod/**"),
        doc("pol_02", glob="dev/*"),
        doc("pol_03", labels={"team": 'quo"te', "env": "ops"}),
        doc("pol_04", glob="db?/**"),
        doc("pol_05", labels={"tier": "ünï"}),
        doc("pol_06", glob="*/web*"),
        doc("pol_07", labels={"env": "x y"}, glob="**"),
    ]
    policies = parse_all(docs, VAULT)
    bulk = assign(policies, names, [json.dumps(lbl) for lbl in labels])
    for name, lbl, got in zip(names, labels, bulk, strict=True):
        want = governing(policies, name, lbl)
        assert (got.id if got else None) == (want.id if want else None), (name, lbl)
    assert any(bulk) and not all(bulk)


def test_empty_selector_governs_everything_left() -> None:
    policies = parse_all([doc("pol_a", glob="a"), doc("pol_b")], VAULT)
    got = assign(policies, ["a", "b", "c"], ["{}", "{}", "{}"])
    assert [p.id if p else None for p in got] == ["pol_a", "pol_b", "pol_b"]
