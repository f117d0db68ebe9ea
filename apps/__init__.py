"""Operator-facing programs: the CLI, the TUI and the desktop app, over the shared core."""
