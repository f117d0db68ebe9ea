"""The KeyVault TUI application: modes, keys, the palette, the shell's lifetime and live state."""

from __future__ import annotations

import gc
import importlib
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.signal import Signal

from apps.tui.widgets.header import FLEET_MODES
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.keyring_store import CredentialStore
    from apps.core.session import Session
    from apps.core.shell import Shell


def _factory(module: str, name: str) -> Callable[[], Screen[Any]]:
    """A mode factory that imports its screen class only when the mode is first entered."""

    def build() -> Screen[Any]:
        cls = getattr(importlib.import_module(f"apps.tui.screens.{module}"), name)
        screen: Screen[Any] = cls()
        return screen

    return build


#: keys Textual itself binds on every screen (focus cycling, copy, its own quit): not listed
FRAMEWORK_KEYS = frozenset({"tab", "shift+tab", "ctrl+c", "super+c", "ctrl+q"})
FULL_COLLECTION_EVERY = 20.0  # seconds between full garbage-collection passes (when idle)
IDLE_BEFORE_COLLECTING = 3.0  # seconds without a key press that count as idle


class KeyVaultApp(App[None]):
    """The dashboard: a login screen, then one mode per area of the fleet."""

    CSS_PATH = "app.tcss"
    TITLE = "KeyVault"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = [
        *(
            Binding(key, f"mode('{mode}')", title, show=False)
            for mode, (_, _, title, key) in FLEET_MODES.items()
        ),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("ctrl+l", "logout", "Log out", key_display="ctrl+l", priority=True),
        Binding("ctrl+k", "metadata_key", "Metadata key", key_display="ctrl+k", priority=True),
        Binding("ctrl+p", "command_palette", "Palette", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        shell: Shell | None = None,
        *,
        store: CredentialStore | None = None,
        memory_keyring: bool = False,
        clock: Callable[[], datetime] | None = None,
        start: str = "home",
    ) -> None:
        super().__init__()
        self.start = start  # the mode shown after login: what needs the operator now
        self.shell: Shell | None = shell
        self.store = store
        self.memory_keyring = memory_keyring
        self._clock = clock or (lambda: datetime.now(UTC))
        self.status_signal: Signal[None] = Signal(self, "status")
        self._unhook: list[Callable[[], None]] = []
        self._started = False
        self._reset_modes()

    def now(self) -> datetime:
        """The current time (injectable, so relative times in snapshots are stable)."""
        return self._clock()

    def _reset_modes(self) -> None:
        from apps.tui.screens.login import LoginScreen

        self._modes = {"login": LoginScreen}
        for mode, (module, name, _, _) in FLEET_MODES.items():
            self._modes[mode] = _factory(module, name)

    async def on_mount(self) -> None:
        """Log in first, or start the given shell and show the vaults."""
        self._pace_full_collections()
        if self.shell is None:
            await self.switch_mode("login")
        else:
            await self.start_shell(self.shell)

    def _pace_full_collections(self) -> None:
        """Keep the cyclic collector's full passes out of typing.

        With 10,000 vaults on screen a full (generation 2) collection takes 40-90 ms; left
        automatic it lands in the middle of a filter keystroke. Automatic full passes are
        pushed far out and one runs on a timer instead, when no key came for a few seconds.
        """
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 1_000_000)
        self._last_key = time.monotonic()
        self.set_interval(FULL_COLLECTION_EVERY, self._idle_full_collection)

    def _idle_full_collection(self) -> None:
        if time.monotonic() - self._last_key >= IDLE_BEFORE_COLLECTING:
            gc.collect()

    def on_key(self) -> None:
        """Remember when the operator last typed (for :meth:`_idle_full_collection`)."""
        self._last_key = time.monotonic()

    async def start_shell(self, shell: Shell) -> None:
        """Wire a logged-in shell to the header, load its first data and show the vaults."""
        from apps.core.keyring_store import MemoryKeyring

        self.shell = shell
        self.memory_keyring |= isinstance(shell.session.store.backend, MemoryKeyring)
        self._unhook = [
            shell.on_status(lambda _online: self.status_signal.publish(None)),
            shell.alerts.subscribe(lambda _state: self.status_signal.publish(None)),
        ]
        await shell.start()
        self._started = True
        self.status_signal.publish(None)
        await self.switch_mode(self.start)
        await self._fresh_login()

    async def _fresh_login(self) -> None:
        """Drop the login screen that was used (its fields), so a logout starts clean."""
        from apps.tui.screens.login import LoginScreen

        await self.remove_mode("login")
        self.add_mode("login", LoginScreen)

    def login(self, session: Session) -> None:
        """Build the shell for a new session and show the fleet (called by the login screen).

        Runs in an app worker, not the login screen's: the login screen is dropped on the way.
        """
        from apps.core.shell import Shell

        self.run_worker(
            self.start_shell(Shell.from_session(session)), group="login", exit_on_error=False
        )

    async def close_shell(self) -> None:
        """Stop the live stream and close the clients (idempotent)."""
        for unhook in self._unhook:
            unhook()
        self._unhook = []
        if self.shell is not None and self._started:
            self._started = False
            await self.shell.close()

    async def on_unmount(self) -> None:
        """However the app ends, the stream stops and the clients close."""
        await self.close_shell()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Fleet modes need a logged-in shell."""
        if action in ("mode", "logout", "metadata_key") and self.shell is None:
            return False
        return True

    async def action_mode(self, mode: str) -> None:
        """Switch to one of the fleet's modes."""
        if self.shell is None or self.current_mode == mode:
            return
        try:
            await self.switch_mode(mode)
        except (ImportError, AttributeError):
            self.notify(f"The {mode} screen is not available in this build.", severity="warning")

    def action_help(self) -> None:
        """Show every key of the current screen and the app."""
        from apps.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    async def action_quit(self) -> None:
        """Close the shell, then exit."""
        await self.close_shell()
        self.exit()

    async def action_logout(self) -> None:
        """Revoke the session, forget the token and return to the login screen."""
        shell = self.shell
        if shell is None:
            return
        for unhook in self._unhook:
            unhook()
        self._unhook, self._started = [], False
        try:
            revoked = await shell.logout()  # also closes the shell
        except KeyVaultError as exc:
            self.notify(exc.message, title="Logout", severity="warning")
        else:
            if not revoked:
                self.notify(
                    "Logged out here; the control plane was unreachable, so the "
                    "session ends when it expires.",
                    severity="warning",
                )
        self.shell = None
        self.status_signal.publish(None)
        await self.switch_mode("login")
        for mode, (module, name, _, _) in FLEET_MODES.items():
            await self.remove_mode(mode)
            self.add_mode(mode, _factory(module, name))

    def action_metadata_key(self) -> None:
        """Import or create the organisation's metadata key (names appear at once)."""
        from apps.tui.screens.metadata_key import MetadataKeyScreen

        if self.shell is None or isinstance(self.screen, MetadataKeyScreen):
            return

        def done(fingerprint: str | None) -> None:
            if fingerprint:
                self.notify(f"Metadata key {fingerprint[:19]}… in use: names are shown.")

        self.push_screen(MetadataKeyScreen(), done)

    def action_toggle_dark(self) -> None:
        """Switch between the dark and the light theme."""
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Every described key of the screen, the modes, logout, theme, then Textual's own."""
        seen: set[str] = {"logout"}  # offered below, with its explanation
        for active in screen.active_bindings.values():
            binding = active.binding
            if not binding.description or binding.action in seen or not active.enabled:
                continue
            if binding.action.startswith("mode(") or binding.action == "command_palette":
                continue
            if not isinstance(active.node, (Screen, App)) or binding.key in FRAMEWORK_KEYS:
                continue  # a table's cursor keys, focus cycling: not commands worth listing
            seen.add(binding.action)
            key = binding.key_display or binding.key
            yield SystemCommand(
                binding.description,
                f"Key: {key}",
                _runner(self, active.node, binding.action),
            )
        if self.shell is not None:
            for mode, (_, _, title, _) in FLEET_MODES.items():
                yield SystemCommand(
                    f"Go to {title}",
                    f"Switch to the {title.lower()} screen",
                    _runner(self, self, f"mode('{mode}')"),
                )
            yield SystemCommand(
                "Log out", "Revoke this session and forget its token", self.action_logout
            )
        yield SystemCommand("Toggle dark/light", "Switch the colour theme", self.action_toggle_dark)
        yield from super().get_system_commands(screen)


def _runner(app: App[Any], node: Any, action: str) -> Callable[[], Any]:
    """A palette callback that runs ``action`` on ``node`` (a screen, a widget or the app)."""

    async def run() -> None:
        await app.run_action(action, node)

    return run


def run_tui(*, session: Session | None = None, memory_keyring: bool = False) -> None:
    """Open the dashboard (logged in when a session is given); what ``keyvault tui`` calls."""
    from apps.core.keyring_store import CredentialStore
    from apps.core.shell import Shell

    store = CredentialStore.memory() if memory_keyring else None
    shell = Shell.from_session(session) if session is not None else None
    app = KeyVaultApp(shell, store=store, memory_keyring=memory_keyring)
    app.run()
