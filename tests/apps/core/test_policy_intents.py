"""Policies and commands made in apps/core travel sealed; every rule is checked before sealing,
all errors at once; the control plane checks what it can see (interval, notice, vaults)."""

from __future__ import annotations

import json

import pytest

from apps.core.intents import IntentMaker
from apps.core.viewmodels.policies import PoliciesViewModel, PolicyDraft
from common import errors as e
from common import intents
from common.cpclient import AsyncControlPlaneClient
from common.metadata_key import MetadataKey
from tests.apps.conftest import LiveControlPlane

KEY = MetadataKey(bytes(range(32)))
DRAFT = PolicyDraft(name="db passwords", name_glob="prod/db/*", interval_days="30",
                    notice_days="2", rotator="random", settings="length=40")  # fmt: skip


def test_every_error_at_once_each_next_to_its_field() -> None:
    bad = PolicyDraft(name=" ", name_glob="a*" * 17, interval_days="1", notice_days="2",
                      rotator="postgres", settings="conection=main, role=app")  # fmt: skip
    with pytest.raises(e.ValidationError) as info:
        bad.validate()
    fields = info.value.details["fields"]
    assert set(fields) == {"name", "name_glob", "settings", "notice_days"}
    assert "did you mean 'connection'" in fields["settings"] and "wildcards" in fields["name_glob"]
    assert "shorter than the interval" in fields["notice_days"]
    assert info.value.details["field"] == "name"


def test_no_key_no_intent() -> None:
    maker = IntentMaker(lambda: None)
    with pytest.raises(e.ConfigError, match="metadata-key import"):
        maker.policy(DRAFT.validate())
    assert not maker.has_key and maker.open({"x": 1}) is None


async def test_sealed_crud_against_the_real_control_plane(live_cp: LiveControlPlane) -> None:
    vault_id = live_cp.enroll_vault()
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        vm = PoliciesViewModel(cp, key_source=lambda: KEY)
        row = await vm.create(DRAFT)
        stored = await cp.get_policy(row.id)
        assert stored["sealed"] and "name" not in stored and "selector" not in stored
        assert "prod/db" not in json.dumps(stored) and "db passwords" not in json.dumps(stored)
        assert stored["interval_seconds"] == 30 * 86400 and stored["notice_seconds"] == 2 * 86400
        assert row.name == "db passwords" and row.selector_text == "name ~ prod/db/*"

        # without the key the list still loads and says the policy is sealed
        blind = PoliciesViewModel(cp)
        await blind.refresh()
        assert blind.state.rows[0].selector_text.startswith("sealed")

        # a scope naming a vault that does not exist: refused before sealing ...
        with pytest.raises(e.ValidationError) as info:
            await vm.create(PolicyDraft(**{**vars(DRAFT), "name": "x", "scope": "vlt_nope"}))
        assert "vlt_nope" in info.value.details["fields"]["scope"]
        # ... and by the control plane for a hand-made intent
        forged = IntentMaker(lambda: KEY).policy(
            {**DRAFT.validate(), "scope": {"vault_ids": ["vlt_nope"]}}
        )
        with pytest.raises(e.ValidationError, match="no vault vlt_nope"):
            await cp.create_policy(forged)

        changed = await vm.update(row.id, PolicyDraft(**{**vars(DRAFT), "scope": vault_id}))
        assert changed.doc["version"] == 2 and changed.scope_text == vault_id
        # an older revision (a replay through the API) is refused
        old = IntentMaker(lambda: KEY).policy(DRAFT.validate(), policy_id=row.id, revision=2)
        with pytest.raises(e.ConflictError, match="revision"):
            await cp.update_policy(row.id, old)
        # a sealed policy is deleted only by a sealed deletion
        with pytest.raises(e.ValidationError, match="sealed deletion"):
            await cp.delete_policy(row.id)
        await vm.delete(row.id)
        assert await cp.list_policies() == []


async def test_the_control_plane_checks_the_clear_fields(live_cp: LiveControlPlane) -> None:
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        keys = intents.IntentKeys(KEY)
        header = intents.policy_header(intents.new_id("pol"), 1, interval_seconds=3600,
                                       notice_seconds=7200, vault_ids=None)  # fmt: skip
        with pytest.raises(e.ValidationError) as info:
            await cp.create_policy({"intent": keys.seal(header, {"name": "n"})})
        assert "notice_seconds" in info.value.details["fields"]
        # plaintext bodies: every error at once, notice < interval, vaults that exist
        with pytest.raises(e.ValidationError) as info:
            await cp.create_policy({"name": "", "selector": {}, "interval_seconds": 600,
                                    "notice_seconds": 900, "rotator": {"type": "random"},
                                    "scope": {"vault_ids": ["vlt_gone"]}})  # fmt: skip
        assert {"name", "selector", "notice_seconds"} <= set(info.value.details["fields"])
