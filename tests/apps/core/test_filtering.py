"""The one text filter both UIs see: in the view models, case-insensitive, kept in step."""

from __future__ import annotations

from typing import Any

from apps.core.filtering import matching, needle_of
from apps.core.viewmodels.policies import PoliciesViewModel


def test_matching_trims_ignores_case_and_keeps_order() -> None:
    rows = ["Alpha", "beta", "ALPHABET", "gamma"]
    assert needle_of("  AlPh ") == "alph"
    assert matching(rows, " ALPH ", str.lower) == ("Alpha", "ALPHABET")
    assert matching(rows, "", str.lower) == tuple(rows)
    assert matching(rows, "   ", str.lower) == tuple(rows)
    assert matching(rows, "zeta", str.lower) == ()


def policy(i: int, name: str, rotator: str = "random") -> dict[str, Any]:
    return {
        "id": f"pol_{i}",
        "name": name,
        "selector": {"name_glob": f"{name}/*"},
        "interval_seconds": 86400,
        "notice_seconds": 0,
        "rotator": {"type": rotator, "settings": {}},
        "scope": {"all": True},
    }


def test_policies_filter_follows_stream_events_without_a_reload() -> None:
    vm = PoliciesViewModel(client=None)
    vm.apply_event("policy.created", policy(1, "db passwords"))
    vm.apply_event("policy.created", policy(2, "api keys", rotator="command"))
    assert [r.name for r in vm.state.visible] == ["api keys", "db passwords"]
    vm.set_filter("DB PASS")
    assert [r.name for r in vm.state.visible] == ["db passwords"]
    vm.set_filter("command")  # the rotator is searched too
    assert [r.name for r in vm.state.visible] == ["api keys"]
    vm.apply_event("policy.created", policy(3, "ssh", rotator="command"))
    assert [r.name for r in vm.state.visible] == ["api keys", "ssh"]  # a new row enters
    vm.apply_event("policy.deleted", {"id": "pol_2"})
    assert [r.name for r in vm.state.visible] == ["ssh"]
    vm.set_filter("")
    assert len(vm.state.visible) == len(vm.state.rows) == 2
