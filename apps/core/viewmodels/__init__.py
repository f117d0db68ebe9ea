"""One view model per screen, shared by the TUI and the desktop app (no UI toolkit here)."""
