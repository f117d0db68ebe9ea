"""The help modal: every key of every screen (read from the bindings) and where credentials live."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

#: screens whose keys are listed, in this order: (module under apps.tui.screens, class)
SCREENS: tuple[tuple[str, str], ...] = (
    ("home", "HomeScreen"),
    ("vaults", "VaultsScreen"),
    ("vault_detail", "VaultDetailScreen"),
    ("alerts", "AlertsScreen"),
    ("policies", "PoliciesScreen"),
    ("usage", "UsageScreen"),
    ("audit", "AuditScreen"),
    ("enrollment", "EnrollmentScreen"),
    ("agents", "AgentsScreen"),
    ("secrets", "SecretsScreen"),
    ("users", "UsersScreen"),
    ("login", "LoginScreen"),
)


def described(bindings: Iterable[BindingType]) -> Iterator[tuple[str, str]]:
    """(keys, description) for every binding that has a description."""
    for item in bindings:
        binding = item if isinstance(item, Binding) else Binding(*item)
        if binding.description:
            keys = binding.key_display or ", ".join(k.strip() for k in binding.key.split(","))
            yield keys.replace("question_mark", "?").replace("slash", "/"), binding.description


def screen_classes() -> Iterator[tuple[str, type[Screen[Any]]]]:
    """The screens that exist in this build, with their titles."""
    for module, name in SCREENS:
        try:
            cls = getattr(importlib.import_module(f"apps.tui.screens.{module}"), name)
        except (ImportError, AttributeError):
            continue
        yield str(getattr(cls, "TITLE_TEXT", name)), cls


def keys_table(app_bindings: Iterable[BindingType]) -> Table:
    """One table: the app's keys, then each screen's own."""
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
    table.add_column("Screen", style="bold cyan", no_wrap=True)
    table.add_column("Key", style="bold", no_wrap=True)
    table.add_column("Does")
    sections = [("Everywhere", list(app_bindings))]
    sections += [(title, list(cls.BINDINGS)) for title, cls in screen_classes()]
    for title, bindings in sections:
        for index, (keys, description) in enumerate(described(bindings)):
            table.add_row(title if index == 0 else "", keys, description)
        table.add_section()
    return table


def credentials_text(app: Any) -> Text:
    """Where this session's secrets are kept."""
    from apps.core.session import profile_path

    text = Text()
    text.append("Where your credentials live\n", style="bold")
    shell = getattr(app, "shell", None)
    if getattr(app, "memory_keyring", False):
        store = "in this process's memory only (--memory-keyring): forgotten when you quit"
    elif shell is not None:
        store = f"in your OS keyring ({shell.session.store.name})"
    else:
        store = "in your OS keyring"
    text.append(f"• The session token and the organisation's metadata key: {store}.\n")
    text.append(f"• The profile (URL, e-mail, CA file — nothing secret): {profile_path()}\n")
    text.append(
        "• Secret values are never stored by this app; they are read from agents on demand."
    )
    return text


class HelpScreen(ModalScreen[None]):
    """Every key, per screen, and where credentials are kept; any key closes it."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close help")]

    def __init__(self, current: Screen[Any] | None = None) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        """The keys table and the credentials note, scrollable."""
        with VerticalScroll(id="help-body"):
            yield Static(credentials_text(self.app), id="help-credentials")
            yield Static(
                Text("Keys  (Esc or ? closes; scroll for more)", style="bold"), id="help-title"
            )
            yield Static(keys_table(self.app.BINDINGS), id="help-keys")

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)
