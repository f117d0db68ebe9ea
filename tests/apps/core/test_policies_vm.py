"""PoliciesViewModel and PolicyDraft against a real control plane (and the client additions)."""

from __future__ import annotations

import socket

import pytest

from apps.core.viewmodels.policies import PoliciesViewModel, PolicyDraft, PolicyRow
from common import errors as e
from common.cpclient import AsyncControlPlaneClient, ControlPlaneClient
from common.metadata_key import MetadataKey
from tests.apps.conftest import LiveControlPlane

KEY = MetadataKey(bytes(range(32)))
DRAFT = PolicyDraft(
    name="db passwords",
    name_glob="prod/db/*",
    labels="team=billing, tier=gold",
    interval_days="30",
    notice_days="2",
    rotator="random",
    settings="length=40, exclude_lookalikes=false",
    scope="all",
)


def _field(draft: PolicyDraft) -> str:
    with pytest.raises(e.ValidationError) as info:
        draft.validate()
    assert "\n" not in info.value.message
    return str(info.value.details["field"])


def test_a_draft_becomes_the_api_body() -> None:
    assert DRAFT.validate() == {
        "name": "db passwords",
        "selector": {"name_glob": "prod/db/*", "labels": {"team": "billing", "tier": "gold"}},
        "interval_seconds": 30 * 86400,
        "notice_seconds": 2 * 86400,
        "rotator": {"type": "random", "settings": {"length": 40, "exclude_lookalikes": False}},
        "scope": {"all": True},
    }
    body = PolicyDraft(
        name=" x ", labels="env=prod", interval_days="0.5", notice_days="", scope="vlt_b, vlt_a"
    ).validate()
    assert body["name"] == "x" and body["selector"] == {"labels": {"env": "prod"}}
    assert body["interval_seconds"] == 43200 and body["notice_seconds"] == 0
    assert body["scope"] == {"vault_ids": ["vlt_a", "vlt_b"]}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "  "}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"name_glob": "", "labels": ""}, "name_glob"),
        ({"name_glob": "g" * 201}, "name_glob"),
        ({"labels": "team"}, "labels"),
        ({"labels": "bad key!=x"}, "labels"),
        ({"labels": "team=" + "v" * 129}, "labels"),
        ({"interval_days": "soon"}, "interval_days"),
        ({"interval_days": "0"}, "interval_days"),
        ({"interval_days": "3651"}, "interval_days"),
        ({"notice_days": "-1"}, "notice_days"),
        ({"notice_days": "366"}, "notice_days"),
        ({"rotator": "ldap"}, "rotator"),
        ({"settings": "password=hunter2"}, "settings"),
        ({"settings": "api_token=x"}, "settings"),
        ({"settings": "Length=3"}, "settings"),
        ({"settings": "colour=red"}, "settings"),
        ({"rotator": "postgres", "settings": "role=app"}, "settings"),
        ({"rotator": "command", "settings": ""}, "settings"),
        (
            {"scope": "vlt_a, " + "v" * 101},
            "scope",
        ),  # names are resolved later: only too long fails here
        ({"scope": "web-1, bad\tname"}, "scope"),
    ],
)
def test_bad_fields_are_tagged(changes: dict[str, str], field: str) -> None:
    from dataclasses import replace

    assert _field(replace(DRAFT, **changes)) == field


def test_credential_looking_settings_say_why() -> None:
    with pytest.raises(e.ValidationError, match="looks like a credential"):
        PolicyDraft(name="p", name_glob="*", settings="dsn=postgres://x").validate()
    # a postgres rotator names a connection of the agent's config: that is allowed
    body = PolicyDraft(
        name="p", name_glob="*", rotator="postgres", settings="connection=main, role=app"
    ).validate()
    assert body["rotator"]["settings"] == {"connection": "main", "role": "app"}


async def test_crud_against_the_real_control_plane(live_cp: LiveControlPlane) -> None:
    seen: list[object] = []
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        vm = PoliciesViewModel(cp, on_change=seen.append, key_source=lambda: KEY)
        await vm.refresh()
        assert vm.state.rows == () and vm.state.error is None

        row = await vm.create(DRAFT)
        assert isinstance(row, PolicyRow) and row.id.startswith("pol_")
        assert (row.name, row.interval_days, row.notice_days, row.rotator) == (
            "db passwords",
            30,
            2,
            "random",
        )
        assert row.selector_text == "name ~ prod/db/* and team=billing, tier=gold"
        assert row.scope_text == "all" and row.updated_at is not None
        assert row.updated_at.tzinfo is not None
        assert vm.state.rows == (row,)

        # the draft of a loaded policy round-trips through the form
        draft = vm.draft_of(row.id)
        assert draft.validate() == DRAFT.validate()

        other = await vm.create(PolicyDraft(name="A first", labels="env=dev", interval_days="1"))
        assert [r.name for r in vm.state.rows] == ["A first", "db passwords"]

        changed = await vm.update(row.id, PolicyDraft(**{**vars(draft), "interval_days": "7"}))
        assert changed.interval_days == 7 and changed.doc["version"] == 2

        await vm.refresh()  # what the server holds matches what the view model showed
        assert [(r.id, r.interval_days) for r in vm.state.rows] == [(other.id, 1), (row.id, 7)]

        await vm.delete(other.id)
        assert [r.id for r in vm.state.rows] == [row.id]
        assert [p["id"] for p in await cp.list_policies()] == [row.id]
        assert seen, "listeners were told about changes"


async def test_the_server_stays_the_authority(live_cp: LiveControlPlane) -> None:
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        vm = PoliciesViewModel(cp, key_source=lambda: KEY)
        await vm.create(DRAFT)
        with pytest.raises(e.ConflictError, match="already exists"):
            await vm.create(DRAFT)
        with pytest.raises(e.NotFoundError):
            await vm.update("pol_nope", DRAFT)
        with pytest.raises(e.NotFoundError):
            await vm.delete("pol_nope")
        # a body the draft would never build: the server's ValidationError comes through as is
        with pytest.raises(e.ValidationError, match="interval_seconds"):
            await cp.create_policy({**DRAFT.validate(), "interval_seconds": 5})


async def test_a_viewer_cannot_change_policies(live_cp: LiveControlPlane) -> None:
    viewer = live_cp.member("viewer@example.com", "viewer")
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token(viewer)) as cp:
        vm = PoliciesViewModel(cp, key_source=lambda: KEY)
        await vm.refresh()
        assert vm.state.error is None
        with pytest.raises(e.PermissionDeniedError):
            await vm.create(DRAFT)


async def test_refresh_keeps_rows_and_reports_an_unreachable_server(
    live_cp: LiveControlPlane,
) -> None:
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        vm = PoliciesViewModel(cp, key_source=lambda: KEY)
        await vm.create(DRAFT)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        async with AsyncControlPlaneClient(f"http://127.0.0.1:{port}", "kvs_x") as dead:
            vm.client = dead
            await vm.refresh()
        assert vm.state.error is not None and "cannot reach the control plane" in vm.state.error
        assert len(vm.state.rows) == 1 and not vm.state.loading


async def test_stream_events_update_the_list(live_cp: LiveControlPlane) -> None:
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        doc = await cp.create_policy(DRAFT.validate())
        vm = PoliciesViewModel(cp)
        assert vm.apply_event("policy.created", doc)
        newer = {**doc, "name": "renamed", "version": 2}
        assert vm.apply_event("policy.updated", newer)
        assert not vm.apply_event("policy.updated", doc)  # an older version arriving late
        assert [r.name for r in vm.state.rows] == ["renamed"]
        assert not vm.apply_event("policy.deleted", {"id": "pol_other"})
        assert vm.apply_event("policy.deleted", {"id": doc["id"]})
        assert vm.state.rows == ()
        assert not vm.apply_event("vault.status", {"id": "vlt_x"})


def test_the_blocking_client_has_the_same_methods(live_cp: LiveControlPlane) -> None:
    with ControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        created = cp.create_policy(DRAFT.validate())
        assert cp.get_policy(created["id"])["name"] == "db passwords"
        assert [p["id"] for p in cp.list_policies()] == [created["id"]]
        updated = cp.update_policy(created["id"], {"notice_seconds": 60})
        assert updated["notice_seconds"] == 60 and updated["version"] == 2
        assert cp.delete_policy(created["id"]) is None
        assert cp.list_policies() == []
        page = cp.query_audit(action="policies.create")
        assert [i["action"] for i in page["items"]] == ["policies.create"]
        assert page["next_after"] is None
        usage = cp.usage()
        assert usage["rows"] == [] and usage["total"] == 0 and usage["from"] <= usage["to"]


def test_editing_keeps_intervals_that_are_not_whole_days() -> None:
    doc = {
        "id": "pol_1",
        "name": "hourly",
        "version": 1,
        "selector": {"name_glob": "*"},
        "interval_seconds": 3600,
        "notice_seconds": 600,
        "rotator": {"type": "random", "settings": {"exclude_lookalikes": True}},
        "scope": {"vault_ids": ["vlt_a"]},
    }
    row = PolicyRow.from_json(doc)
    assert row.interval_days == 0.04 and row.scope_text == "vlt_a"
    body = row.draft().validate()
    assert body["interval_seconds"] == 3600 and body["notice_seconds"] == 600
    assert body["rotator"]["settings"] == {"exclude_lookalikes": True}
    assert body["scope"] == {"vault_ids": ["vlt_a"]}


async def test_a_scope_takes_vault_names_against_the_real_control_plane(
    live_cp: LiveControlPlane,
) -> None:
    """Vault names (or ids) in the scope become ids; a name no vault has is an error next
    to the scope field, with every other problem, and nothing is created."""
    import asyncio
    from dataclasses import replace

    web = await asyncio.to_thread(live_cp.enroll_vault, "web-1")
    db = await asyncio.to_thread(live_cp.enroll_vault, "db-1")
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        vm = PoliciesViewModel(cp, key_source=lambda: KEY)
        row = await vm.create(replace(DRAFT, scope=f"web-1, {db}"))
        assert row.doc["scope"] == {"vault_ids": sorted([web, db])}
        with pytest.raises(e.ValidationError) as caught:
            await vm.create(replace(DRAFT, name="other", scope="web-1, web-2", notice_days="99"))
        fields = caught.value.details["fields"]
        assert "no vault web-2" in fields["scope"] and "notice_days" in fields
        assert [r.name for r in vm.state.rows] == [DRAFT.name]
