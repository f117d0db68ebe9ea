"""The navigation table both operator UIs draw: the areas, their order, titles and keys.

The TUI shows an area as a mode (switched with its letter key), the desktop as an entry of its
navigation list (switched with Ctrl+<position>). The titles, the order and the keys are decided
here, once; each UI finds an area's screen or view by one naming rule: module ``page`` under
``apps.tui.screens`` / ``apps.desktop.views``, class ``<Stem>Screen`` / ``<Stem>View``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Area:
    """One area of the fleet an operator can switch to."""

    key: str
    #: the short name in the navigation line / list
    title: str
    #: the area's own heading, at the top of its screen or view
    heading: str
    #: the TUI's key for it
    letter: str
    #: the module of its screen / view in each UI
    page: str
    #: the class name of its screen / view without the ``Screen`` / ``View`` suffix
    stem: str


AREAS: tuple[Area, ...] = (
    Area("home", "Home", "Needs you now", "h", "home", "Home"),
    Area("vaults", "Vaults", "Vaults", "v", "vaults", "Vaults"),
    Area("alerts", "Alerts", "Alerts", "a", "alerts", "Alerts"),
    Area("policies", "Policies", "Rotation policies", "p", "policies", "Policies"),
    Area("usage", "Usage", "Usage", "u", "usage", "Usage"),
    Area("audit", "Audit log", "Audit log", "l", "audit", "Audit"),
    Area("enrollment", "Enrollment", "Enroll an agent", "e", "enrollment", "Enrollment"),
    Area("secrets", "Secrets", "Secrets on an agent", "s", "agents", "Agents"),
    Area("users", "Users", "Users and sessions", "g", "users", "Users"),
)
#: places reached from an area (a vault's detail, one agent's secrets), shown as that area
SUB_AREAS: dict[str, str] = {"vault_detail": "vaults", "agent_secrets": "secrets"}
KEYS: tuple[str, ...] = tuple(a.key for a in AREAS)
_BY_KEY = {a.key: a for a in AREAS}


def area(key: str) -> Area:
    """The area with ``key``; KeyError for an unknown one."""
    return _BY_KEY[key]


def area_of(place: str) -> Area | None:
    """The area a place belongs to: an area key itself, or a sub-area (None for neither)."""
    return _BY_KEY.get(SUB_AREAS.get(place, place))


def shortcut(key: str) -> str:
    """The desktop's shortcut of an area: Ctrl+<its position, from 1>."""
    return f"Ctrl+{KEYS.index(key) + 1}"
