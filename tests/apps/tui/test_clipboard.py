"""The TUI clears a copied secret from the clipboard later, unless the app copied again."""

from __future__ import annotations

import asyncio

from textual.app import App

from apps.tui.widgets.clipboard import TerminalClipboard, terminal_clipboard


async def test_cleared_after_the_delay_and_not_when_replaced() -> None:
    app: App[None] = App()
    async with app.run_test() as pilot:
        assert terminal_clipboard(app) is terminal_clipboard(app)
        clip = TerminalClipboard(app, clear_after=0.1)
        clip.copy("s3cret-value")
        assert app.clipboard == "s3cret-value" and "s3cret" not in repr(clip)
        await asyncio.sleep(0.3)
        await pilot.pause()
        assert app.clipboard == "" and not clip.guard.pending

        clip.copy("s3cret-value")
        app.copy_to_clipboard("my own note")  # something else copied in the app meanwhile
        await asyncio.sleep(0.3)
        await pilot.pause()
        assert app.clipboard == "my own note"

        clip.copy("first")
        clip.copy("second")  # the first timer is stopped: the second copy keeps its full delay
        await asyncio.sleep(0.05)
        assert app.clipboard == "second"
        await asyncio.sleep(0.25)
        await pilot.pause()
        assert app.clipboard == ""
