"""The vault detail screen: names opened locally (or sealed), rotate, resync, live results."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from textual.widgets import DataTable

from apps.core.shell import Shell
from apps.tui.app import KeyVaultApp
from apps.tui.screens.vault_detail import VaultDetailScreen
from common import intents
from tests.apps.fake_cp import NOW, FakeControlPlane, iso
from tests.apps.fake_shell import FakeStream, build_fake_shell
from tests.apps.tui.conftest import SIZE, settle, texts


def _opened(fake: FakeControlPlane, body: dict[str, Any]) -> dict[str, Any]:
    """What a sealed command says (the organisation's key opens it)."""
    return intents.IntentKeys(fake.key).open(body["intent"]).body


async def open_detail(app: KeyVaultApp, pilot: Any, vault_id: str) -> VaultDetailScreen:
    """Push the detail screen of one vault and wait for its data."""
    await settle(pilot)
    screen = VaultDetailScreen(vault_id)
    await app.push_screen(screen)
    await settle(pilot)
    return screen


def cells(screen: VaultDetailScreen) -> list[list[Any]]:
    """Every row of the inventory table."""
    table = screen.query_one(DataTable)
    return [table.get_row_at(i) for i in range(table.row_count)]


async def test_inventory_with_names_opened_locally(
    fake_app: KeyVaultApp, fake_cp: FakeControlPlane
) -> None:
    policy = next(iter(fake_cp.policies))
    fake_cp.add_secret("vlt_000001", "db/password", {"env": "prod"}, policy_id=policy)
    item = fake_cp.inventories["vlt_000001"][-1]
    item["rotation"]["next_due_at"] = iso(NOW - timedelta(days=2))  # overdue
    async with fake_app.run_test(size=SIZE) as pilot:
        screen = await open_detail(fake_app, pilot, "vlt_000001")
        rows = cells(screen)
        assert len(rows) == 7
        by_name = {str(r[0]): r for r in rows}
        assert "app/secret-0" in by_name
        assert str(by_name["app/secret-0"][1]) == "env=prod, team=web"
        overdue = by_name["db/password"]
        assert str(overdue[4]) == fake_cp.policies[policy]["name"]  # the name, not the id
        assert str(overdue[5]) == "ok"
        assert overdue[7].plain == "2026-01-13" and "red" in str(overdue[7].style)
        facts = texts(fake_app, "#facts")
        assert "web-00000" in facts and "online" in facts and "7 secrets" in facts
        assert not screen.query_one("#key-hint").display


async def test_without_the_metadata_key_names_are_sealed(
    fake_cp: FakeControlPlane, stable_config: str, clock: Any
) -> None:
    shell = build_fake_shell(fake_cp)
    shell.session.store.delete_metadata_key("org_acme")
    app = KeyVaultApp(shell, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_detail(app, pilot, "vlt_000001")
        assert {r[0].plain for r in cells(screen)} == {"🔒 sealed"}
        hint = screen.query_one("#key-hint")
        assert hint.display
        assert "import the organisation's metadata key" in texts(app, "#key-hint")
    await shell.close()


async def test_rotate_confirms_then_reports_the_result(
    fake_app: KeyVaultApp, fake_cp: FakeControlPlane, fake_shell: Shell
) -> None:
    stream = fake_shell.stream
    assert isinstance(stream, FakeStream)
    async with fake_app.run_test(size=SIZE) as pilot:
        screen = await open_detail(fake_app, pilot, "vlt_000001")
        await pilot.press("r", "n")
        await settle(pilot)
        assert fake_cp.called("send_command") == []
        await pilot.press("r", "y")
        await settle(pilot)
        [(args, _)] = fake_cp.called("send_command")  # a sealed intent, opened only by agents
        assert args[0] == "vlt_000001" and _opened(fake_cp, args[1])["command"] == "rotate"
        notes = [n.message for n in fake_app._notifications]
        assert any("sent to the vault" in m for m in notes), notes
        command_id = next(iter(fake_cp.commands))
        stream.emit("command.result", fake_cp.finish_command(command_id, "succeeded", "v2"))
        await pilot.pause()
        notes = [n.message for n in fake_app._notifications]
        assert any(m.startswith("Rotation of app/secret-0 succeeded: v2") for m in notes), notes
        assert "Last command: rotate app/secret-0: succeeded — v2" in texts(fake_app, "#facts")
        assert screen.is_current

        # ids in a result read as names, in the command log and in the notification
        [row] = [r for r in screen.model.state.items if r.name == "app/secret-0"]
        await pilot.press("r", "y")
        await settle(pilot)
        second = list(fake_cp.commands)[-1]
        result = f"{row.secret_id} rotated to v3 on vlt_000001"
        stream.emit("command.result", fake_cp.finish_command(second, "succeeded", result))
        await pilot.pause()
        log = texts(fake_app, "#facts").split("Last command: ")[1]
        assert log == "rotate app/secret-0: succeeded — app/secret-0 rotated to v3 on web-00000"
        notes = [n.message for n in fake_app._notifications]
        assert not any(row.secret_id in m for m in notes), notes


async def test_resync_and_live_status(
    fake_app: KeyVaultApp, fake_cp: FakeControlPlane, fake_shell: Shell
) -> None:
    stream = fake_shell.stream
    assert isinstance(stream, FakeStream)
    async with fake_app.run_test(size=SIZE) as pilot:
        await open_detail(fake_app, pilot, "vlt_000001")
        await pilot.press("Y")
        await settle(pilot)
        [(args, _)] = fake_cp.called("send_command")
        assert args[0] == "vlt_000001" and _opened(fake_cp, args[1]) == {"command": "resync",
                                                                         "args": {}}  # fmt: skip
        stream.emit("vault.status", {"vault_id": "vlt_000001", "status": "offline"})
        await pilot.pause()
        assert "offline" in texts(fake_app, "#facts")


async def test_a_failing_rotation_is_a_notification(
    fake_app: KeyVaultApp, fake_cp: FakeControlPlane
) -> None:
    fake_cp.vaults["vlt_000001"]["revoked_at"] = iso(NOW)
    async with fake_app.run_test(size=SIZE) as pilot:
        await open_detail(fake_app, pilot, "vlt_000001")
        await pilot.press("r", "y")
        await settle(pilot)
        notes = [n.message for n in fake_app._notifications]
        assert "vault vlt_000001 is revoked; it takes no commands" in notes
