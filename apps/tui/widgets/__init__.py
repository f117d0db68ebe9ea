"""Widgets shared by the TUI's screens (the header with the live state)."""
