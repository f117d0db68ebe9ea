"""AgentSecretsViewModel against a real agent process over mutual TLS."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from apps.core.agents import AgentProfile
from apps.core.viewmodels.agent_secrets import AgentSecretsViewModel, check_labels, check_name
from common import errors as e
from tests.conftest import AgentProcess

VALUE = "s3cr3t-value-never-shown"


def _profile(agent: AgentProcess, url: str | None = None) -> AgentProfile:
    return AgentProfile.from_data_dir("test agent", url or agent.url, agent.dir.path)


@pytest.fixture
async def vm(agent_process: AgentProcess) -> AsyncIterator[AgentSecretsViewModel]:
    model = AgentSecretsViewModel(_profile(agent_process), agent_process.dir.token)
    try:
        yield model
    finally:
        await model.close()


async def test_the_whole_flow(vm: AgentSecretsViewModel) -> None:
    states: list[object] = []
    vm.subscribe(states.append)
    await vm.refresh()
    assert vm.state.rows == () and vm.state.error is None

    row = await vm.create("db/prod/password", VALUE, "team=billing, env=prod", "the main db")
    assert (row.name, row.version, row.deleted) == ("db/prod/password", 1, False)
    assert row.labels == (("env", "prod"), ("team", "billing"))
    assert row.description == "the main db" and row.id.startswith("sec_")
    assert row.updated_at is not None and row.updated_at.tzinfo is not None
    await vm.create("api/key", "another-value")
    await vm.refresh()
    assert [r.name for r in vm.state.rows] == ["api/key", "db/prod/password"]

    vm.set_filter("PROD")
    assert [r.name for r in vm.state.visible] == ["db/prod/password"]
    vm.set_filter("")

    assert await vm.reveal("db/prod/password") == VALUE
    assert vm.state.revealed == {"db/prod/password": VALUE}
    for state in (vm.state, *states):
        assert VALUE not in repr(state)
    assert "db/prod/password" in repr(vm.state)

    updated = await vm.update("db/prod/password", "a-new-value", labels="team=billing")
    assert updated.version == 2 and updated.labels == (("team", "billing"),)
    assert vm.state.revealed == {}  # a changed secret's old value is not kept
    assert await vm.reveal("db/prod/password") == "a-new-value"
    vm.hide("db/prod/password")
    assert vm.state.revealed == {}

    versions = await vm.versions("db/prod/password")
    assert vm.state.selected == "db/prod/password" and vm.state.versions == versions
    assert [(v.version, v.current) for v in versions] == [(2, True), (1, False)]
    assert all(v.created_at is not None and v.origin for v in versions)

    rotated = await vm.rotate("db/prod/password")
    assert rotated.version == 3
    new_value = await vm.reveal("db/prod/password")
    assert new_value not in (VALUE, "a-new-value") and len(new_value) >= 16

    deleted = await vm.delete("db/prod/password")
    assert deleted.deleted and vm.state.revealed == {}
    assert [r.name for r in vm.state.rows] == ["api/key"]
    await vm.set_show_deleted(True)
    assert [(r.name, r.deleted) for r in vm.state.rows] == [
        ("api/key", False),
        ("db/prod/password", True),
    ]
    back = await vm.undelete("db/prod/password")
    assert not back.deleted and back.version == 3
    await vm.set_show_deleted(False)
    assert [(r.name, r.deleted) for r in vm.state.rows] == [
        ("api/key", False),
        ("db/prod/password", False),
    ]


async def test_the_agent_refuses_what_it_must(vm: AgentSecretsViewModel) -> None:
    await vm.create("app/token", "v1")
    with pytest.raises(e.ConflictError):
        await vm.create("app/token", "v2")
    with pytest.raises(e.NotFoundError):
        await vm.reveal("no/such")
    with pytest.raises(e.NotFoundError):
        await vm.rotate("no/such")
    with pytest.raises(e.ConflictError):
        await vm.undelete("app/token")  # not deleted


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("", "v"), "name"),
        (("a//b", "v"), "name"),
        (("/lead", "v"), "name"),
        (("n" * 201, "v"), "name"),
        (("sec_" + "a" * 26, "v"), "name"),
        (("ok/name", ""), "value"),
        (("ok/name", "v", "Team=x"), "labels"),
        (("ok/name", "v", "team"), "labels"),
        (("ok/name", "v", "team=\x07"), "labels"),
        (("ok/name", "v", "", "d" * 1001), "description"),
    ],
)
async def test_bad_input_is_tagged_before_any_request(args: tuple[str, ...], field: str) -> None:
    model = AgentSecretsViewModel(AgentProfile("x", "https://127.0.0.1:1"), "kvt_x")
    with pytest.raises(e.ValidationError) as info:
        await model.create(*args)
    assert info.value.details == {"field": field}
    assert model._client is None  # nothing was sent (no client was even made)


async def test_an_update_with_nothing_to_change_is_refused(vm: AgentSecretsViewModel) -> None:
    await vm.create("x/y", "v")
    with pytest.raises(e.ValidationError) as info:
        await vm.update("x/y", "")
    assert info.value.details == {"field": "value"}
    kept = await vm.update("x/y", "", description="only the description")
    assert kept.version == 1 and kept.description == "only the description"


def test_name_and_label_rules_match_the_agent() -> None:
    from agent.secrets import validate_labels, validate_name

    for name in ("db/prod/password", "_x", "a.b-c/d_e", "A1"):
        assert check_name(name) == validate_name(name)
    labels = check_labels("team=billing, env=prod")
    assert validate_labels(labels) == labels == {"team": "billing", "env": "prod"}


async def test_an_unreachable_agent_is_a_clear_error(agent_process: AgentProcess) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = AgentSecretsViewModel(
        _profile(agent_process, f"https://127.0.0.1:{port}"), agent_process.dir.token
    )
    try:
        await model.refresh()
        assert model.state.error is not None
        assert model.state.error.startswith(f"cannot reach the agent at https://127.0.0.1:{port}")
        assert "\n" not in model.state.error and not model.state.loading
        with pytest.raises(e.UnavailableError, match="cannot reach the agent"):
            await model.create("a/b", "v")
        with pytest.raises(e.UnavailableError):
            await model.reveal("a/b")
    finally:
        await model.close()


async def test_a_wrong_token_or_missing_tls_file(agent_process: AgentProcess) -> None:
    model = AgentSecretsViewModel(_profile(agent_process), "kvt_wrong")
    try:
        await model.refresh()
        assert model.state.error is not None and model.state.rows == ()
        with pytest.raises(e.AuthenticationError):
            await model.reveal("a")
    finally:
        await model.close()
    broken = AgentProfile("x", agent_process.url, ca_file="/nonexistent/ca.crt")
    model = AgentSecretsViewModel(broken, agent_process.dir.token)
    await model.refresh()
    assert model.state.error is not None and "/nonexistent/ca.crt" in model.state.error


async def test_a_copied_value_never_enters_the_state(vm: AgentSecretsViewModel) -> None:
    """Copy-without-reveal: no listener (no screen) ever sees the value; a reveal stays as it was."""
    await vm.refresh()
    await vm.create("db/copy", VALUE)
    states: list[object] = []
    vm.subscribe(states.append)
    assert await vm.value_to_copy("db/copy") == VALUE
    assert "db/copy" not in vm.state.revealed
    assert all(VALUE not in repr(s) and "db/copy" not in s.revealed for s in states)  # type: ignore[attr-defined]
    await vm.reveal("db/copy")
    assert await vm.value_to_copy("db/copy") == VALUE
    assert vm.state.revealed == {"db/copy": VALUE}  # revealed before: still revealed
    with pytest.raises(e.NotFoundError):
        await vm.value_to_copy("no/such")


async def test_token_names_from_a_real_agent_name_the_audit_actor(
    vm: AgentSecretsViewModel,
) -> None:
    """The control plane's audit names a workload by its token id only: the agent's own
    token list gives its name; a token nobody has named reads short, never as the raw id."""
    from apps.core.names import NameBook

    learned: dict[str, str] = {}
    vm.learn_tokens = learned.update  # what the shell's NameBook is told on the first load
    await vm.refresh()
    names = await vm.token_names()
    assert names and all(k.startswith("tok_") and v for k, v in names.items())
    assert learned == names and vm.learn_tokens is None
    book = NameBook()
    unknown = "tok_3p4zyzgvnscdlsh5"
    assert book.label(unknown) == "token 3p4z"
    assert book.humanize(f"revoked {unknown}") == "revoked token 3p4z"
    for token_id, name in names.items():
        book.learn(token_id, name)
        assert book.label(token_id) == name
