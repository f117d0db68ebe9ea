"""UI-free client layer shared by the TUI, the desktop app and the CLI."""
