"""Shell: names appear at once when the metadata key arrives (also under a memory keyring),
alerts and last-seen stay true across status changes, and the home list follows along."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from apps.core.keyring_store import CredentialStore
from apps.core.session import Profile, Session
from apps.core.shell import Shell
from common.errors import ConflictError, ValidationError
from common.metadata_key import MetadataKey
from tests.apps.fake_cp import EMAIL, ORG_ID, FakeControlPlane, iso
from tests.apps.fake_shell import FakeStream


def blind_shell(fake: FakeControlPlane) -> Shell:
    """A shell whose (memory) keyring holds no metadata key, as under --memory-keyring."""
    profile = Profile(fake.url, EMAIL, org_id=ORG_ID, org_name="Acme", role="owner")
    shell = Shell(Session(profile, CredentialStore.memory(), "kvs_fake"), fake)  # type: ignore[arg-type]
    shell.stream = FakeStream(shell)  # type: ignore[assignment]
    shell.home.clock = lambda: fake.now  # certificates age on the fake's clock
    return shell


async def test_importing_the_key_opens_names_at_once_in_open_views(tmp_path: Path) -> None:
    fake = FakeControlPlane()
    web = fake.add_vault("web-1", secrets=3)
    shell = blind_shell(fake)
    await shell.start()
    try:
        detail = shell.vault_detail(web)
        await detail.refresh()
        assert all(row.sealed for row in detail.state.items) and not detail.state.has_key

        wrong = tmp_path / "other.key"
        MetadataKey.generate().save(wrong)
        with pytest.raises(ConflictError, match="registered for Acme"):
            await shell.import_metadata_key(wrong)
        assert shell.metadata_key() is None

        right = tmp_path / "metadata.key"
        fake.key.save(right)
        await shell.import_metadata_key(right)
        # no reopening: the open view shows the names, and the name book knows them
        assert detail.state.has_key
        assert sorted(r.name for r in detail.state.items) == [f"app/secret-{i}" for i in range(3)]
        first = fake.inventories[web][0]["secret_id"]
        assert shell.names.secret(web, first) == "app/secret-0"
        assert shell.names.humanize(f"rotated {first} on {web}") == "rotated app/secret-0 on web-1"
        kept = shell.session.store.get_metadata_key(ORG_ID)  # in memory only
        assert kept is not None and kept.fingerprint == fake.key.fingerprint
    finally:
        await shell.close()


async def test_creating_the_key_writes_the_file_and_registers_it(tmp_path: Path) -> None:
    fake = FakeControlPlane()
    shell = blind_shell(fake)
    await shell.start()
    try:
        out = tmp_path / "metadata.key"
        with pytest.raises(ConflictError, match="already has a metadata key"):
            await shell.create_metadata_key(out)
        assert not out.exists()
        key = await shell.create_metadata_key(out, replace=True)
        assert MetadataKey.load(out).fingerprint == key.fingerprint
        assert out.stat().st_mode & 0o777 == 0o600
        assert fake.called("put_metadata_key")[-1][0] == (key.fingerprint,)
        assert shell.metadata_key().fingerprint == key.fingerprint  # type: ignore[union-attr]
        with pytest.raises(ValidationError, match="never overwritten"):
            await shell.create_metadata_key(out, replace=True)
    finally:
        await shell.close()


async def test_status_changes_keep_alerts_and_last_seen_true() -> None:
    fake = FakeControlPlane()
    web = fake.add_vault("web-1")
    shell = blind_shell(fake)
    await shell.start()
    try:
        # offline: the row gets the vault's true last heartbeat, not the time the app loaded
        last = fake.now.replace(hour=3)
        fake.vaults[web].update(status="offline", last_heartbeat_at=iso(last))
        alert = fake.add_alert("vault_offline", f"vault {web} is offline", "critical", web)
        shell.route_event("vault.status", {"vault_id": web, "status": "offline"})
        await asyncio.sleep(0.05)
        row = shell.vaults.row(web)
        assert row is not None and row.status == "offline" and row.last_seen == last
        # the alert.raised event was missed (a stall): the home list still has one item
        assert [i.category for i in shell.home.state.items] == ["offline"]

        # back online: the control plane resolved the alert; the resolve event was missed,
        # yet the app reloads the alerts on the status change and shows nothing open
        await shell.alerts.refresh()
        assert shell.alerts.state.unread == 1 and shell.home.state.items[0].alert_id == alert["id"]
        fake.vaults[web]["status"] = "online"
        await fake.resolve_alert(alert["id"])
        before = len(fake.called("list_alerts"))
        shell.route_event("vault.status", {"vault_id": web, "status": "online"})
        await asyncio.sleep(0.05)
        assert len(fake.called("list_alerts")) == before + 1
        assert shell.alerts.open_rows == () and shell.alerts.state.unread == 0
        assert shell.home.state.items == () and shell.home.state.total == 0
    finally:
        await shell.close()
