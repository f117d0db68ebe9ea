"""PySide6 desktop app for operators."""
