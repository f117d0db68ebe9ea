"""Screenshots of every TUI screen over a real demo stack: ``docs/screenshots/tui-*.svg`` + ``.png``.

Run ``.venv/bin/python scripts/tui_screenshots.py`` (needs ``rsvg-convert``, Debian
``librsvg2-bin``). It starts ``keyvault demo``'s stack in a temporary folder, drives the real
app headless at 140×40, stops one agent to show a live offline alert, and writes one SVG and one
PNG per screen.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"
SIZE = (140, 40)


def free_port_base(count: int = 4) -> int:
    """The first of ``count`` consecutive free ports (below the ephemeral range)."""
    for base in range(20400, 30000, 10):
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


class Shooter:
    """Saves the app's current screen under a name."""

    def __init__(self, pilot: Any) -> None:
        self.pilot = pilot

    async def __call__(self, name: str, wait: float = 0.6) -> None:
        await self.pilot.app.workers.wait_for_complete()
        await self.pilot.pause(wait)
        svg = OUT / f"tui-{name}.svg"
        self.pilot.app.save_screenshot(filename=svg.name, path=str(OUT))
        # rsvg drops the leading non-breaking spaces of a styled span unless told to keep spaces
        text = svg.read_text(encoding="utf-8").replace("<svg ", '<svg xml:space="preserve" ', 1)
        svg.write_text(text, encoding="utf-8")
        png = svg.with_suffix(".png")
        await asyncio.to_thread(
            subprocess.run, ["rsvg-convert", "-o", str(png), str(svg)], check=True
        )
        print("saved", svg.with_suffix(".png").relative_to(ROOT))

    async def keys(self, *keys: str) -> None:
        """Press keys and let the app settle."""
        await self.pilot.press(*keys)
        await self.pilot.app.workers.wait_for_complete()
        await self.pilot.pause(0.3)


async def login_screen(store: Any) -> None:
    """The login screen, pre-filled from the saved profile."""
    from apps.tui.app import KeyVaultApp

    app = KeyVaultApp(store=store)
    async with app.run_test(size=SIZE) as pilot:
        await Shooter(pilot)("login")


async def product_screens(stack: Any) -> None:
    """Every screen of a logged-in app over the demo stack."""
    from apps.core.shell import Shell
    from apps.tui.app import KeyVaultApp

    app = KeyVaultApp(Shell.from_session(stack.session), memory_keyring=stack.memory_keyring)
    async with app.run_test(size=SIZE) as pilot:
        shoot = Shooter(pilot)
        await shoot("vaults", wait=1.5)
        await shoot.keys("enter")
        await shoot("vault-detail")
        await shoot.keys("escape", "p")
        await shoot("policies")
        await shoot.keys("n")
        await shoot("policy-form")
        await shoot.keys("escape", "u")
        await shoot("usage", wait=1.0)
        await shoot.keys("escape", "l")
        await shoot("audit")
        await shoot.keys("escape", "e")
        await shoot("enrollment")
        await shoot.keys("escape", "s")
        await shoot("agents")
        await shoot.keys("enter")
        await shoot("secrets", wait=1.0)
        await shoot.keys("n")
        await shoot("secret-form")
        await shoot.keys("escape", "question_mark")
        await shoot("help")
        await shoot.keys("escape", "v")
        agent = next(c for c in stack.children if c.name.endswith("web-staging"))
        agent.stop()  # the control plane raises "vault offline" about 30 s later
        for _ in range(120):
            if app.shell is not None and app.shell.alerts.state.unread:
                break
            await pilot.pause(0.5)
        await shoot("vaults-offline")
        await shoot.keys("a")
        await shoot("alerts")


def main() -> int:
    """Start the stack, take the screenshots, stop the stack."""
    from apps.cli.demo_stack import DemoStack

    if not shutil.which("rsvg-convert"):
        print("rsvg-convert is missing: apt-get install librsvg2-bin", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kv-shots-") as tmp:
        stack = DemoStack(Path(tmp) / "demo", free_port_base())
        try:
            stack.start()
            asyncio.run(product_screens(stack))
            asyncio.run(login_screen(stack.session.store))
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
