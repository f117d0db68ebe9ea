"""Screenshots of every desktop view over a real demo stack: ``docs/screenshots/desktop-*.png``.

Run ``.venv/bin/python scripts/desktop_screenshots.py`` (offscreen Qt, no display needed). It
starts ``keyvault demo``'s stack in a temporary folder, stops one agent (a live offline alert,
so Home has something to show), opens the real main window on it and grabs every view and the
login dialog in the light and the dark theme.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
OUT = ROOT / "docs" / "screenshots"


async def settle(seconds: float = 0.6) -> None:
    """Let tasks finish and the window repaint."""
    await asyncio.sleep(seconds)


async def grab(widget: Any, name: str) -> None:
    """Save one PNG."""
    await settle()
    widget.grab().save(str(OUT / f"desktop-{name}.png"))
    print("saved", f"docs/screenshots/desktop-{name}.png")


VIEWS = ("home", "vaults", "alerts", "policies", "usage", "audit", "enrollment", "secrets")


async def every_view(app: Any, window: Any, suffix: str) -> None:
    """Each navigation view, a vault's detail and one agent's secrets, in the current theme."""
    for key in VIEWS:
        view = window.show_view(key)
        await grab(window, f"{key}{suffix}" if key != "secrets" else f"agents{suffix}")
        if key == "vaults":
            window.open_vault(next(iter(window.shell.vaults.state.visible)).id)
            await grab(window, f"vault-detail{suffix}")
    agents = view
    agents.open_agent(agents.shell.agents.list()[0])
    await grab(window, f"secrets{suffix}")
    agents.close_secrets()  # the next pass's "agents" shot shows the list, not these secrets


async def shoot(app: Any, stack: Any) -> None:
    """Every view of a logged-in window over the demo stack, light and dark."""
    from apps.core.shell import Shell
    from apps.desktop import theme
    from apps.desktop.login_dialog import LoginDialog
    from apps.desktop.main_window import MainWindow

    agent = next(c for c in stack.children if c.name.endswith("web-staging"))
    agent.stop()  # the control plane raises "vault offline" about 30 s later
    window = MainWindow(Shell.from_session(stack.session))
    window.resize(1280, 760)
    window.show()
    while not window.ready:  # noqa: ASYNC110 (a Qt flag, not an asyncio event)
        await asyncio.sleep(0.05)
    for _ in range(120):
        if any(r.kind == "vault_offline" for r in window.shell.alerts.open_rows):
            break
        await asyncio.sleep(0.5)
    for name, suffix in (("light", ""), ("dark", "-dark")):
        theme.apply(app, name)
        await every_view(app, window, suffix)
        dialog = LoginDialog(stack.session.store, note=None)
        dialog.show()
        await grab(dialog, f"login{suffix}")
        dialog.close()
    theme.apply(app, "light")
    window.close()


def main() -> int:
    """Start the stack, take the screenshots, stop the stack."""
    import qasync
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication
    from tui_screenshots import free_port_base

    from apps.cli.demo_stack import DemoStack
    from apps.desktop.app import application

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kv-desk-") as tmp:
        for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
            QSettings.setPath(fmt, QSettings.Scope.UserScope, tmp)
        stack = DemoStack(Path(tmp) / "demo", free_port_base())
        try:
            stack.start()
            app = application()
            assert isinstance(app, QApplication)
            loop = qasync.QEventLoop(app)
            asyncio.set_event_loop(loop)
            with loop:
                loop.run_until_complete(shoot(app, stack))
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
