"""AuditViewModel against a real control plane's audit log (keyset pages, filters)."""

from __future__ import annotations

from datetime import UTC, datetime

from apps.core.viewmodels.audit import AuditRow, AuditViewModel
from common import errors as e
from common.cpclient import AsyncControlPlaneClient
from tests.apps.conftest import LiveControlPlane
from tests.apps.fake_cp import FakeControlPlane

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat()


def _seed(live: LiveControlPlane) -> str:
    """Three agent events from one vault (source = vault id) after the enrollment's entries."""
    vault = live.enroll_vault("web-1")
    events = [
        {"event_id": "e1", "op": "secret.read", "outcome": "ok", "at": AT, "actor": "tok_app"},
        {"event_id": "e2", "op": "secret.write", "outcome": "ok", "at": AT, "secret_id": "sec_1"},
        {"event_id": "e3", "op": "secret.read", "outcome": "denied", "at": AT, "actor": "tok_x"},
    ]
    live.server.run(live.cp.audit.ingest(vault, events))
    return vault


async def test_pages_append_newest_first(live_cp: LiveControlPlane) -> None:
    vault = _seed(live_cp)
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        everything = (await cp.query_audit(limit=1000))["items"]
        vm = AuditViewModel(cp, page_size=2)
        await vm.refresh()
        assert len(vm.state.rows) == 2 and vm.state.has_more and vm.state.error is None
        while vm.state.has_more:
            await vm.load_more()
        seqs = [r.seq for r in vm.state.rows]
        # the log opens on its newest entries (issue 19), older pages follow
        assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
        assert seqs == [i["seq"] for i in reversed(everything)]
        assert vm.state.visible == vm.state.rows

        agent_rows = [r for r in vm.state.rows if r.source == vault]
        assert [(r.action, r.outcome, r.vault_id) for r in agent_rows] == [
            ("secret.read", "denied", vault),
            ("secret.write", "ok", vault),
            ("secret.read", "ok", vault),
        ]
        assert agent_rows[2].actor == "tok_app" and agent_rows[1].target == "sec_1"
        assert agent_rows[2].at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        cp_rows = [r for r in vm.state.rows if r.source == "control_plane"]
        assert cp_rows and all(r.vault_id is None for r in cp_rows)

        await vm.load_more()  # nothing more: a no-op
        assert [r.seq for r in vm.state.rows] == seqs


async def test_server_filters_and_local_text(live_cp: LiveControlPlane) -> None:
    vault = _seed(live_cp)
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        vm = AuditViewModel(cp)
        await vm.set_filter(action="secret.read")
        assert vm.state.action == "secret.read"
        assert [r.outcome for r in vm.state.rows] == ["denied", "ok"]

        loaded = vm.state.rows
        await vm.set_filter(text="DENIED")  # local: the loaded rows stay as they were
        assert [r.actor for r in vm.state.visible] == ["tok_x"]
        assert vm.state.rows is loaded

        await vm.set_filter(action="", source=vault, text="")
        assert vm.state.action is None and vm.state.source == vault
        assert [r.action for r in vm.state.rows] == ["secret.read", "secret.write", "secret.read"]
        assert [r.outcome for r in vm.state.rows] == ["denied", "ok", "ok"]
        assert vm.state.visible == vm.state.rows

        await vm.set_filter(source="control_plane", text="sec_1")
        assert vm.state.rows and vm.state.visible == ()


async def test_a_bad_filter_is_an_error_in_state(live_cp: LiveControlPlane) -> None:
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        vm = AuditViewModel(cp)
        await vm.refresh()
        rows = vm.state.rows
        await vm.set_filter(action="not allowed!")
        assert vm.state.error is not None and "action" in vm.state.error
        assert vm.state.rows == rows


async def test_only_admins_read_the_audit_log(live_cp: LiveControlPlane) -> None:
    viewer = live_cp.member("viewer@example.com", "viewer")
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token(viewer)) as cp:
        vm = AuditViewModel(cp)
        await vm.refresh()
        assert vm.state.rows == () and vm.state.error is not None


async def test_a_failed_page_keeps_what_was_loaded() -> None:
    fake = FakeControlPlane()
    for n in range(5):
        fake.add_audit(f"thing.{n}")
    vm = AuditViewModel(fake, page_size=2)
    await vm.refresh()
    fake.fail_next(e.UnavailableError("cannot reach the control plane"), "query_audit")
    await vm.load_more()
    assert vm.state.error == "cannot reach the control plane"
    assert [r.action for r in vm.state.rows] == ["thing.4", "thing.3"] and vm.state.has_more
    await vm.load_more()  # the same page again, once it works
    assert [r.action for r in vm.state.rows] == ["thing.4", "thing.3", "thing.2", "thing.1"]
    assert vm.state.error is None


def test_a_row_from_json() -> None:
    row = AuditRow.from_json(
        {
            "seq": 7,
            "at": AT,
            "source": "vlt_a",
            "actor": None,
            "action": "secret.read",
            "target": None,
            "outcome": "ok",
            "details": {},
        }
    )
    assert (row.seq, row.vault_id, row.actor, row.target) == (7, "vlt_a", None, None)


async def test_live_new_entries_on_top_and_filter_suggestions(live_cp: LiveControlPlane) -> None:
    vault = _seed(live_cp)
    async with AsyncControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        vm = AuditViewModel(cp, page_size=2)
        await vm.refresh()
        top = vm.state.rows[0].seq
        later = [{"event_id": "e4", "op": "secret.delete", "outcome": "ok", "at": AT}]
        live_cp.server.run(live_cp.cp.audit.ingest(vault, later))
        await vm.check_newer()
        assert vm.state.rows[0].action == "secret.delete" and vm.state.rows[1].seq == top
        await vm.check_newer()  # nothing new: nothing doubled
        assert [r.seq for r in vm.state.rows].count(vm.state.rows[0].seq) == 1
        while vm.state.has_more:
            await vm.load_more()
        assert vm.suggest("action", "secret.") == ["secret.delete", "secret.read", "secret.write"]
        assert vault in vm.suggest("source", "vlt_") and "control_plane" in vm.suggest("source", "")
