"""Importing the metadata key from inside the TUI (memory keyring): names appear at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.widgets import DataTable, Input

from apps.tui.app import KeyVaultApp
from apps.tui.screens.metadata_key import MetadataKeyScreen
from apps.tui.screens.vault_detail import VaultDetailScreen
from common.metadata_key import MetadataKey
from tests.apps.core.test_shell_names import blind_shell
from tests.apps.fake_cp import FakeControlPlane
from tests.apps.tui.conftest import SIZE, settle


def _names(app: KeyVaultApp) -> list[str]:
    table = app.screen.query_one("#inventory", DataTable)
    return sorted(str(table.get_row_at(i)[0]) for i in range(table.row_count))


async def test_ctrl_k_imports_the_key_and_the_open_vault_shows_names(
    tmp_path: Path, stable_config: str, clock: Any
) -> None:
    fake = FakeControlPlane()
    web = fake.add_vault("web-1", secrets=3)
    shell = blind_shell(fake)
    app = KeyVaultApp(shell, clock=clock, start="vaults")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.push_screen(VaultDetailScreen(web))
        await settle(pilot)
        assert not any(n.startswith("app/secret-") for n in _names(app))  # sealed

        wrong = tmp_path / "other.key"
        MetadataKey.generate().save(wrong)
        await pilot.press("ctrl+k")
        await settle(pilot)
        assert isinstance(app.screen, MetadataKeyScreen)
        app.screen.query_one("#mk-path", Input).value = str(wrong)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, MetadataKeyScreen)  # refused, and says why
        assert "registered for Acme" in str(app.screen.query_one("#mk-error").content)

        right = tmp_path / "keyvault-metadata.key"
        fake.key.save(right)
        app.screen.query_one("#mk-path", Input).value = str(right)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, VaultDetailScreen)  # no reopening
        assert _names(app) == [f"app/secret-{i}" for i in range(3)]
    await shell.close()
