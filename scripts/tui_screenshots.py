"""Screenshots of every TUI screen over a real demo stack: ``docs/screenshots/tui-*.svg`` + ``.png``.

Run ``.venv/bin/python scripts/tui_screenshots.py`` (needs ``rsvg-convert``, Debian
``librsvg2-bin``). It starts ``keyvault demo``'s stack in a temporary folder, drives the real
app headless at 140×40 and 80×24, dark and light, after stopping one agent (a live offline
alert, so Home has something to show), and writes one SVG and one PNG per screen and pass.
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
    """Saves the app's current screen under a name (plus the pass's suffix)."""

    def __init__(self, pilot: Any, suffix: str = "") -> None:
        self.pilot = pilot
        self.suffix = suffix

    async def __call__(self, name: str, wait: float = 0.6) -> None:
        await self.pilot.app.workers.wait_for_complete()
        await self.pilot.pause(wait)
        svg = OUT / f"tui-{name}{self.suffix}.svg"
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


#: every screen: (name, keys that lead there from the previous one)
TOUR: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("home", ("h",)),
    ("vaults", ("v",)),
    ("vault-detail", ("enter",)),
    ("alerts", ("escape", "a")),
    ("policies", ("p",)),
    ("policy-form", ("n",)),
    ("usage", ("escape", "u")),
    ("audit", ("escape", "l")),
    ("enrollment", ("escape", "e")),
    ("metadata-key", ("ctrl+k",)),
    ("agents", ("escape", "escape", "s")),
    ("secrets", ("enter",)),
    ("secret-form", ("n",)),
    ("help", ("escape", "question_mark")),
)
PASSES = (  # (terminal size, theme, file-name suffix)
    (SIZE, "textual-dark", ""),
    (SIZE, "textual-light", "-light"),
    ((80, 24), "textual-dark", "-80x24"),
    ((80, 24), "textual-light", "-light-80x24"),
)


async def login_screen(store: Any) -> None:
    """The login screen, pre-filled from the saved profile, in each pass."""
    from apps.tui.app import KeyVaultApp

    for size, theme, suffix in PASSES:
        app = KeyVaultApp(store=store)
        async with app.run_test(size=size) as pilot:
            app.theme = theme
            await Shooter(pilot, suffix)("login")


async def wait_offline(stack: Any) -> None:
    """Stop one agent and wait for its "offline" alert, so every screen shows a live fleet
    with something that needs the operator."""
    from apps.core.shell import Shell

    agent = next(c for c in stack.children if c.name.endswith("web-staging"))
    agent.stop()  # the control plane raises "vault offline" about 30 s later
    shell = Shell.from_session(stack.session)
    await shell.start()
    try:
        for _ in range(120):
            if any(r.kind == "vault_offline" for r in shell.alerts.open_rows):
                return
            await asyncio.sleep(0.5)
    finally:
        await shell.close()


async def product_screens(stack: Any) -> None:
    """Every screen of a logged-in app over the demo stack, in every pass."""
    from apps.core.shell import Shell
    from apps.tui.app import KeyVaultApp

    await wait_offline(stack)
    for size, theme, suffix in PASSES:
        shell = Shell.from_session(stack.session)
        app = KeyVaultApp(shell, memory_keyring=stack.memory_keyring)
        async with app.run_test(size=size) as pilot:
            app.theme = theme
            shoot = Shooter(pilot, suffix)
            await pilot.pause(1.5)
            for name, keys in TOUR:
                await shoot.keys(*keys)
                await shoot(name, wait=1.0 if name in ("usage", "secrets", "home") else 0.6)


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
