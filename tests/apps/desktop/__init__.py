"""Desktop app tests (PySide6, offscreen)."""
