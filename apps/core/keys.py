"""The key table both operator UIs follow: one meaning per key, on every screen and view.

A key means one thing wherever it is pressed: ``r`` always rotates, F5 always reloads, ``x``
always removes or revokes something (behind a confirmation), ``n`` always makes something new.
The TUI's screens bind these keys (a test walks every screen's bindings against this table and
fails when a key has two meanings); the desktop's menu actions and shortcuts use the same
meanings (Reload is F5 / Ctrl+R on both). Area letters come from :mod:`apps.core.navigation`.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.core.navigation import AREAS


@dataclass(frozen=True)
class Meaning:
    """What a key does, and the screen actions that count as doing it."""

    name: str
    #: the keys, as the TUI writes them (comma-separated); the first is the one shown
    keys: str
    #: how the key is shown in help and footers
    display: str
    #: the action names (without ``action_``) that carry this meaning on some screen
    actions: frozenset[str]


def _m(name: str, keys: str, display: str, *actions: str) -> Meaning:
    return Meaning(name, keys, display, frozenset(actions))


MEANINGS: tuple[Meaning, ...] = (
    _m("reload", "f5,ctrl+r", "F5", "refresh"),
    _m("rotate", "r", "r", "rotate"),
    _m("resync", "Y", "Y", "resync"),
    _m("reveal or hide a value", "ctrl+t", "ctrl+t", "toggle_reveal", "toggle_value"),
    _m("copy", "c", "c", "copy"),
    _m("new", "n", "n", "new"),
    _m("edit", "E", "E", "edit", "role"),
    _m("delete (can be undone)", "d", "d", "delete"),
    _m("undelete", "U", "U", "undelete"),
    _m("remove or revoke (confirmed)", "x", "x", "revoke", "remove"),
    _m("acknowledge", "k", "k", "acknowledge"),
    _m("resolve", "f", "f", "resolve"),
    _m("end sessions", "K", "K", "end_sessions"),
    _m("reset password", "w", "w", "reset"),
    _m("load more", "m", "m", "more"),
    _m("filter", "slash", "/", "focus_filter", "focus_text"),
    _m("sort", "o", "o", "cycle_sort"),
    _m("reverse sort", "O", "O", "flip_sort"),
    _m("show or hide deleted", "D", "D", "toggle_deleted"),
    _m("show or hide resolved", "t", "t", "toggle_resolved"),
    _m("versions", "V", "V", "toggle_versions"),
    _m("open", "enter", "enter", "open", "edit"),
    _m("save", "ctrl+s", "ctrl+s", "save", "submit"),
    _m("single sign-on", "ctrl+o", "ctrl+o", "sso"),
    _m(
        "back",
        "escape,backspace",
        "esc",
        "back",
        "cancel",
        "close",
        "focus_table",
        "focus_list",
    ),
    _m("date range", "7,3,9", "7/3/9", "range"),
    _m("help", "question_mark", "?", "help"),
    _m("log out", "ctrl+l", "ctrl+l", "logout"),
    _m("metadata key", "ctrl+k", "ctrl+k", "metadata_key"),
    _m("palette", "ctrl+p", "ctrl+p", "command_palette"),
    _m("quit", "q", "q", "quit"),
    _m("switch area", ",".join(a.letter for a in AREAS), "letters", "mode"),
)
_BY_NAME = {m.name: m for m in MEANINGS}


def meaning(name: str) -> Meaning:
    """The meaning called ``name``; KeyError for an unknown one."""
    return _BY_NAME[name]


def meaning_for(key: str, action: str) -> str | None:
    """The meaning of binding ``key`` to ``action``; None when the table has no such pair.

    An action with arguments (``range(7)``, ``mode('vaults')``) is looked up by its name.
    """
    bare = action.split("(", 1)[0]
    for item in MEANINGS:
        if bare in item.actions and key in {k.strip() for k in item.keys.split(",")}:
            return item.name
    return None


#: keys inside a yes/no dialog or the help modal (a dialog owns the keyboard while open)
DIALOG_MEANINGS: tuple[Meaning, ...] = (
    _m("yes", "y", "y", "answer"),
    _m("no", "n", "n", "answer"),
    _m("back", "escape,question_mark,q", "esc", "answer", "close", "cancel"),
)


def dialog_meaning_for(key: str, action: str) -> str | None:
    """Like :func:`meaning_for`, for a dialog's keys."""
    bare = action.split("(", 1)[0]
    for item in DIALOG_MEANINGS:
        if bare in item.actions and key in {k.strip() for k in item.keys.split(",")}:
            return item.name
    return None


def desktop_shortcuts(name: str) -> list[str]:
    """The desktop's shortcuts for a meaning, in Qt's spelling (``f5,ctrl+r`` → F5, Ctrl+R)."""
    return [
        "+".join(p.capitalize() for p in k.strip().split("+"))
        for k in meaning(name).keys.split(",")
    ]
