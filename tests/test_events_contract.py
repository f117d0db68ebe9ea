"""The operator-stream contract (common.events): round trips, refusals, and one home for names."""

from __future__ import annotations

import ast
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common import events
from common.errors import ValidationError

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ("control_plane", "apps", "common", "bench", "agent", "k8s_operator")
# The operator API's route table names each route's audit action; "org.metadata_key" is that
# action's name there (a different namespace that happens to share the spelling).
NOT_EVENTS = {("control_plane/routes.py", "org.metadata_key")}


def _sample(kind: events.EventKind) -> dict[str, object]:
    return {name: f"v_{name}" for name in kind.required}


@pytest.mark.parametrize("kind", list(events.KINDS.values()), ids=str)
def test_every_kind_round_trips(kind: events.EventKind) -> None:
    event = events.make(kind, "org_1", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), _sample(kind))
    text = events.encode(event)
    assert json.loads(text)["type"] == kind.name
    back = events.decode(text)
    assert back == event and back.at == "2026-01-02T03:04:05Z"
    assert events.decode(events.to_wire(event)) == event


def test_every_kind_says_who_may_see_it() -> None:
    for kind in events.KINDS.values():
        assert kind.audience in ("viewer", "operator", "admin", "owner"), kind
        assert kind.summary, kind
    # the stream sends every event of an organisation to all its members; a kind for a narrower
    # audience needs per-role filtering in control_plane/views/stream.py first
    assert {k.audience for k in events.KINDS.values()} == {events.ANY_MEMBER}


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"type": "vault.exploded", "data": {}}', "unknown event kind 'vault.exploded'"),
        ('{"type": "event", "kind": "alert.raised", "data": {"id": "a"}}', "unknown event kind"),
        ('{"data": {}}', "unknown event kind None"),
        ('{"type": "vault.status", "data": []}', "data must be a JSON object"),
        ('{"type": "vault.status", "data": {"vault_id": "v"}}', "data lacks status"),
        ('{"type": "alert.raised", "org_id": 7, "data": {"id": "a"}}', "org_id and at"),
        ('{"type": "hello"}', "unknown event kind 'hello'"),
    ],
)
def test_decode_refuses_with_a_clear_message(message: str, why: str) -> None:
    with pytest.raises(ValidationError) as caught:
        events.decode(message)
    assert why in caught.value.message


def test_decode_refuses_oversized_messages() -> None:
    with pytest.raises(ValidationError, match="larger than"):
        events.decode("x" * (events.MAX_MESSAGE + 1))


def test_make_refuses_missing_fields() -> None:
    with pytest.raises(ValidationError, match=r"vault\.registered event: data lacks name"):
        events.make(events.VAULT_REGISTERED, "org_1", datetime.now(UTC), {"vault_id": "v"})


def _literals(path: Path) -> list[tuple[int, str]]:
    """Event-name string constants and ``f"<family>.{…}"`` strings in one Python file."""
    names = set(events.KINDS)
    prefixes = {f"{k.family}." for k in events.KINDS.values()}
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and node.value in names:
            found.append((node.lineno, str(node.value)))
        elif isinstance(node, ast.JoinedStr) and node.values:
            head = node.values[0]
            if isinstance(head, ast.Constant) and head.value in prefixes:
                found.append((node.lineno, f"{head.value}{{…}}"))
    return found


def test_no_event_name_is_written_outside_the_contract() -> None:
    offenders = []
    for top in SOURCE:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "common/events.py":
                continue
            for line, name in _literals(path):
                if (rel, name) not in NOT_EVENTS:
                    offenders.append(f"{rel}:{line}: {name!r}")
    assert not offenders, "use the constants of common.events instead:\n" + "\n".join(offenders)


def test_the_scan_catches_a_literal(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text('a = "vault.status"\nb = f"alert.{state}"\nc = "vault.statuses"\n')
    assert _literals(sample) == [(1, "vault.status"), (2, "alert.{…}")]


def test_names_are_unique_and_dotted() -> None:
    for name, kind in events.KINDS.items():
        assert name == kind.name and re.fullmatch(r"[a-z]+\.[a-z_]+", name)
