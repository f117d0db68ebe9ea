"""Light and dark themes that follow the system's colour scheme (or a saved preference)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from apps.core.rules import Tone, tone

THEMES = ("system", "light", "dark")

#: the colour of each semantic tone (``apps.core.rules``), readable on both backgrounds
TONE_COLORS: dict[str, dict[Tone, str]] = {
    "light": {
        "ok": "#1a7f37",
        "critical": "#cf222e",
        "warning": "#9a6700",
        "muted": "#6e7781",
        "info": "#0969da",
    },
    "dark": {
        "ok": "#3fb950",
        "critical": "#f85149",
        "warning": "#d29922",
        "muted": "#8b949e",
        "info": "#58a6ff",
    },
}

_PALETTES = {
    "light": {
        "window": "#f6f8fa",
        "base": "#ffffff",
        "alt": "#f3f5f7",
        "text": "#1f2328",
        "muted": "#59636e",
        "button": "#eef1f4",
        "highlight": "#0969da",
        "border": "#d0d7de",
        "banner": "#fff1e5",
        "banner_text": "#953800",
    },
    "dark": {
        "window": "#161b22",
        "base": "#0d1117",
        "alt": "#151b23",
        "text": "#e6edf3",
        "muted": "#9198a1",
        "button": "#21262d",
        "highlight": "#1f6feb",
        "border": "#30363d",
        "banner": "#3d1f00",
        "banner_text": "#ffa657",
    },
}


def system_scheme() -> str:
    """``dark`` or ``light``: what the desktop asks for (light when it does not say)."""
    scheme = QGuiApplication.styleHints().colorScheme()
    return "dark" if scheme == Qt.ColorScheme.Dark else "light"


def resolve(choice: str) -> str:
    """The concrete theme (``light``/``dark``) for a preference (``system``/``light``/``dark``)."""
    return system_scheme() if choice not in ("light", "dark") else choice


def palette(name: str) -> QPalette:
    """A full QPalette for ``light`` or ``dark``."""
    c = _PALETTES[name]
    pal = QPalette()
    roles = {
        QPalette.ColorRole.Window: c["window"],
        QPalette.ColorRole.WindowText: c["text"],
        QPalette.ColorRole.Base: c["base"],
        QPalette.ColorRole.AlternateBase: c["alt"],
        QPalette.ColorRole.Text: c["text"],
        QPalette.ColorRole.Button: c["button"],
        QPalette.ColorRole.ButtonText: c["text"],
        QPalette.ColorRole.Highlight: c["highlight"],
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.ToolTipBase: c["base"],
        QPalette.ColorRole.ToolTipText: c["text"],
        QPalette.ColorRole.PlaceholderText: c["muted"],
        QPalette.ColorRole.Link: c["highlight"],
    }
    for role, color in roles.items():
        pal.setColor(role, QColor(color))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(c["muted"]))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(c["muted"]))
    return pal


def stylesheet(name: str) -> str:
    """The app-wide stylesheet for ``light`` or ``dark`` (spacing, banner, message bar, nav)."""
    c = _PALETTES[name]
    return f"""
QListWidget#nav {{ background: {c["window"]}; border: none; border-right: 1px solid {c["border"]};
    font-size: 10.5pt; outline: 0; }}
QListWidget#nav::item {{ padding: 8px 14px; border-radius: 6px; margin: 2px 6px; }}
QListWidget#nav::item:selected {{ background: {c["highlight"]}; color: #ffffff; }}
QLabel#banner {{ background: {c["banner"]}; color: {c["banner_text"]}; padding: 6px 12px;
    font-weight: 600; }}
QLabel#header {{ color: {c["muted"]}; padding: 2px 4px; }}
QLabel#title {{ font-size: 14pt; font-weight: 600; }}
QLabel#muted, QLabel#summary {{ color: {c["muted"]}; }}
QLabel.field-error, QLabel#fieldError {{ color: {TONE_COLORS[name]["critical"]}; }}
QTableView {{ gridline-color: {c["border"]}; border: 1px solid {c["border"]};
    selection-background-color: {c["highlight"]}; }}
QHeaderView::section {{ background: {c["button"]}; color: {c["text"]}; padding: 4px 6px;
    border: none; border-bottom: 1px solid {c["border"]}; border-right: 1px solid {c["border"]}; }}
QLineEdit, QComboBox, QSpinBox {{ padding: 4px 6px; border: 1px solid {c["border"]};
    border-radius: 4px; background: {c["base"]}; }}
QPushButton {{ padding: 5px 14px; border: 1px solid {c["border"]}; border-radius: 5px;
    background: {c["button"]}; }}
QPushButton:default {{ background: {c["highlight"]}; color: #ffffff; border-color: {c["highlight"]}; }}
QPushButton:disabled {{ color: {c["muted"]}; }}
"""


def apply(app: QApplication, choice: str) -> str:
    """Apply a preference (``system``/``light``/``dark``) to the app; returns the concrete theme."""
    name = resolve(choice)
    app.setStyle("Fusion")
    app.setPalette(palette(name))
    app.setStyleSheet(stylesheet(name))
    app.setProperty("kv_theme", name)
    return name


def current() -> str:
    """The concrete theme applied now (``light`` before :func:`apply`)."""
    app = QApplication.instance()
    value = app.property("kv_theme") if app is not None else None
    return value if value in ("light", "dark") else "light"


def status_color(word: str) -> QColor | None:
    """The colour of a status word, severity or tone in the current theme, or None."""
    found = tone(word)
    return QColor(TONE_COLORS[current()][found]) if found else None
