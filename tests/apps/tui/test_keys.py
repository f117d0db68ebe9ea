"""One meaning per key: every TUI screen's bindings follow the key table in ``apps.core.keys``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import defaultdict
from typing import Any

from textual.binding import Binding
from textual.screen import ModalScreen, Screen

import apps.tui.screens
import apps.tui.widgets
from apps.core import keys
from apps.core.navigation import AREAS
from apps.tui.app import KeyVaultApp


def _screens() -> list[type[Screen[Any]]]:
    """Every screen class defined in the TUI's screens and widgets packages."""
    found: list[type[Screen[Any]]] = []
    for package in (apps.tui.screens, apps.tui.widgets):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, Screen) and cls.__module__ == module.__name__:
                    found.append(cls)
    return found


def _pairs(owner: type[Any]) -> list[tuple[str, str]]:
    """(key, action) for each key of each binding the class declares itself."""
    out = []
    for item in owner.__dict__.get("BINDINGS", []):
        binding = item if isinstance(item, Binding) else Binding(*item)
        out += [(key.strip(), binding.action) for key in binding.key.split(",")]
    return out


def test_the_walk_finds_every_screen() -> None:
    """The walk below is not vacuous: it sees the areas' screens and the dialogs."""
    names = {cls.__name__ for cls in _screens()}
    assert {f"{a.stem}Screen" for a in AREAS} <= names
    assert {"VaultDetailScreen", "SecretsScreen", "HelpScreen", "ConfirmScreen"} <= names


def test_the_table_gives_each_key_one_meaning() -> None:
    """No key is listed under two meanings, in the main table or the dialogs' table."""
    for table in (keys.MEANINGS, keys.DIALOG_MEANINGS):
        seen: dict[str, str] = {}
        for item in table:
            for key in item.keys.split(","):
                assert key not in seen, f"{key!r} means both {seen[key]!r} and {item.name!r}"
                seen[key] = item.name


def test_every_screen_binding_follows_the_table() -> None:
    """Every key on every screen carries the table's meaning, and no key has two meanings.

    Screens (and the app's own keys, which reach every screen) share one table; a dialog owns
    the keyboard while it is open, so its y / n / esc are checked against the dialogs' table.
    """
    wrong: list[str] = []
    meanings: dict[str, set[str]] = defaultdict(set)
    owners: list[type[Any]] = [KeyVaultApp, *_screens()]
    for owner in owners:
        dialog = issubclass(owner, ModalScreen)
        for key, action in _pairs(owner):
            found = keys.meaning_for(key, action)
            if found is None and dialog:
                found = keys.dialog_meaning_for(key, action)
            if found is None:
                wrong.append(f"{owner.__name__}: {key!r} → {action!r} is not in apps.core.keys")
            elif not dialog:
                meanings[key].add(found)
    wrong += [f"{key!r} means {sorted(m)}" for key, m in meanings.items() if len(m) > 1]
    assert not wrong, "\n".join(wrong)


def test_screens_never_shadow_an_area_letter() -> None:
    """A screen binding an area's letter would hide that area from it (``h`` was hide)."""
    letters = {a.letter for a in AREAS}
    clashes = [
        f"{cls.__name__}: {key!r}"
        for cls in _screens()
        if not issubclass(cls, ModalScreen)
        for key, _ in _pairs(cls)
        if key in letters
    ]
    assert not clashes


def test_the_desktop_reload_shortcuts_follow_the_table() -> None:
    """The desktop spells the same reload keys in Qt's form."""
    assert keys.desktop_shortcuts("reload") == ["F5", "Ctrl+R"]
