"""The organisation's metadata key from inside the TUI: import its key file, or create one.

Kept in the OS keyring (in memory under --memory-keyring); every open view shows the names at
once. The rules (the registered fingerprint, owner only, never overwrite a file) are the core's.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from apps.core.metadata_keys import DEFAULT_KEY_FILE
from common.errors import KeyVaultError


class MetadataKeyScreen(ModalScreen[str | None]):
    """A key file's path; Import it, or Create a new key written there. Dismisses with the
    fingerprint (None: cancelled)."""

    DEFAULT_CSS = """
    MetadataKeyScreen { align: center middle; }
    MetadataKeyScreen > #mk-box {
        width: 72; height: auto; padding: 1 2; border: thick $accent; background: $surface;
    }
    MetadataKeyScreen #mk-error { color: $error; height: auto; }
    MetadataKeyScreen #mk-buttons { height: auto; align-horizontal: right; margin-top: 1; }
    MetadataKeyScreen Button { margin-left: 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        """What the key is for, the path, the buttons."""
        with Vertical(id="mk-box"):
            yield Static(
                "The organisation's metadata key opens secret names on this computer; the "
                "control plane only knows its fingerprint. Import the key file, or create a "
                "new key (owner) written to this file for the agents."
            )
            yield Input(DEFAULT_KEY_FILE, placeholder="path of the key file", id="mk-path")
            yield Static("", id="mk-error")
            with Horizontal(id="mk-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Create new", id="create", variant="warning")
                yield Button("Import", id="import", variant="primary")

    def on_mount(self) -> None:
        """Typing starts in the path."""
        self.query_one("#mk-path", Input).focus()

    def on_input_submitted(self) -> None:
        """Enter imports."""
        self._run("import")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Import, create or cancel."""
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self._run(str(event.button.id))

    def _run(self, what: str) -> None:
        path = Path(self.query_one("#mk-path", Input).value.strip() or DEFAULT_KEY_FILE)
        self.run_worker(self._do(what, path), group="metadata-key", exclusive=True)

    async def _do(self, what: str, path: Path) -> None:
        shell = self.app.shell  # type: ignore[attr-defined]
        try:
            if what == "create":
                key = await shell.create_metadata_key(path)
            else:
                key = await shell.import_metadata_key(path)
        except KeyVaultError as exc:
            self.query_one("#mk-error", Static).update(exc.message)
            return
        self.dismiss(key.fingerprint)

    def action_cancel(self) -> None:
        """Esc: nothing changes."""
        self.dismiss(None)
