"""The navigation table: areas in order, unique keys, sub-areas, desktop shortcuts."""

from __future__ import annotations

import pytest

from apps.core.navigation import AREAS, KEYS, SUB_AREAS, area, area_of, shortcut


def test_areas_in_order_with_unique_keys_and_letters() -> None:
    assert KEYS == (
        "home",
        "vaults",
        "alerts",
        "policies",
        "usage",
        "audit",
        "enrollment",
        "secrets",
        "users",
    )
    assert len({a.letter for a in AREAS}) == len(AREAS)
    assert all(len(a.letter) == 1 and a.title and a.heading for a in AREAS)
    assert area("policies").heading == "Rotation policies" and area("policies").title == "Policies"
    with pytest.raises(KeyError):
        area("nope")


def test_sub_areas_show_as_their_area() -> None:
    assert all(parent in KEYS for parent in SUB_AREAS.values())
    assert area_of("vault_detail") == area("vaults")
    assert area_of("agent_secrets") == area("secrets")
    assert area_of("alerts") == area("alerts")
    assert area_of("login") is None


def test_desktop_shortcuts_follow_the_order() -> None:
    assert shortcut("home") == "Ctrl+1" and shortcut("secrets") == "Ctrl+8"


def test_every_area_has_a_tui_screen_and_a_desktop_view_by_the_naming_rule() -> None:
    import importlib

    for a in AREAS:
        screen = importlib.import_module(f"apps.tui.screens.{a.page}")
        view = importlib.import_module(f"apps.desktop.views.{a.page}")
        assert getattr(screen, f"{a.stem}Screen").TITLE_TEXT == a.heading
        assert isinstance(getattr(view, f"{a.stem}View"), type)
