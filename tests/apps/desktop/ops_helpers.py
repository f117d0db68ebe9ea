"""Helpers of the operations-view tests: screenshots.

Screenshots of the views go to docs/screenshots/ when asked for:

``KEYVAULT_SCREENSHOTS=1 pytest tests/apps/desktop`` saves each view, with the real data the
test made, as ``docs/screenshots/desktop-<name>.png``; without the variable nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtWidgets import QApplication, QWidget

from apps.desktop import theme

SHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"


def shoot(widget: QWidget, name: str, size: tuple[int, int] = (1100, 640)) -> Path | None:
    """Save ``widget`` (light theme, ``size``) as ``desktop-<name>.png`` when asked to."""
    if os.environ.get("KEYVAULT_SCREENSHOTS") != "1":
        return None
    app = QApplication.instance()
    if isinstance(app, QApplication) and app.property("kv_theme") is None:
        theme.apply(app, "light")
    widget.resize(*size)
    QApplication.processEvents()
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"desktop-{name}.png"
    assert widget.grab().save(str(path)), f"cannot write {path}"
    return path
