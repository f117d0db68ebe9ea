"""Operator intents: sealed, authenticated, opened only with the organisation's key."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from common import intents
from common.errors import IntegrityError, ValidationError
from common.metadata_key import MetadataKey

KEY = MetadataKey(bytes(range(32)))
BODY = {"name": "db creds", "selector": {"name_glob": "prod/db/*"}, "rotator": {"type": "random"}}


def _policy(**over: object) -> dict[str, object]:
    header = intents.policy_header(
        intents.new_id("pol"), 1, interval_seconds=86400, notice_seconds=3600,
        vault_ids=["vlt_b", "vlt_a"],
    )  # fmt: skip
    doc = intents.IntentKeys(KEY).seal(header, BODY)
    doc.update(over)
    return doc


def test_roundtrip_and_the_control_plane_sees_no_selector() -> None:
    doc = _policy()
    text = json.dumps(doc)
    assert "prod/db" not in text and "db creds" not in text and "random" not in text
    opened = intents.IntentKeys(KEY).open(doc)
    assert opened.body == BODY
    assert opened.header.vault_ids == ("vlt_a", "vlt_b")
    assert opened.header.interval_seconds == 86400
    assert intents.parse_header(doc).notice_seconds == 3600  # readable without the key


@pytest.mark.parametrize(
    "field,value",
    [("interval_seconds", 60), ("notice_seconds", 0), ("vault_ids", None), ("revision", 9),
     ("vault_ids", ["vlt_a", "vlt_b", "vlt_c"]), ("id", "pol_" + "a" * 26)],
)  # fmt: skip
def test_every_clear_field_is_covered_by_the_tag(field: str, value: object) -> None:
    with pytest.raises(IntegrityError):
        intents.IntentKeys(KEY).open(_policy(**{field: value}))


def test_another_key_or_a_changed_body_does_not_open() -> None:
    doc = _policy()
    with pytest.raises(IntegrityError):
        intents.IntentKeys(MetadataKey(bytes(32))).open(doc)
    sealed = str(doc["sealed"])
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(IntegrityError):
        intents.IntentKeys(KEY).open({**doc, "sealed": flipped})


def test_seal_and_auth_keys_are_distinct_subkeys() -> None:
    assert KEY.subkey(b"intent-seal-v1") != KEY.subkey(b"intent-auth-v1")
    assert len({KEY.subkey(b"intent-seal-v1"), bytes(range(32))}) == 2


def test_bodies_are_padded_to_buckets() -> None:
    keys = intents.IntentKeys(KEY)
    header = intents.policy_header("pol_" + "a" * 26, 1, interval_seconds=60, notice_seconds=0,
                                   vault_ids=None)  # fmt: skip
    short = keys.seal(header, {"name": "a"})
    longer = keys.seal(header, {"name": "a" * 150})
    assert len(short["sealed"]) == len(longer["sealed"])


def test_malformed_intents_are_validation_errors() -> None:
    with pytest.raises(ValidationError):
        intents.parse_header({"v": 1})
    with pytest.raises(ValidationError):
        intents.IntentKeys(KEY).open({**_policy(), "extra": 1})
    with pytest.raises(ValidationError):
        intents.IntentKeys(KEY).open({**_policy(), "sealed": "A" * 20000})


def test_command_headers_expire_and_target_one_vault() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    header = intents.command_header("vlt_x", now=now)
    assert header.expires_at == now + intents.DEFAULT_COMMAND_TTL
    assert header.meant_for("vlt_x") and not header.meant_for("vlt_y")
    with pytest.raises(ValidationError):
        intents.command_header("vlt_x", ttl=timedelta(days=30))
    doc = intents.IntentKeys(KEY).seal(header, {"command": "resync", "args": {}})
    assert intents.IntentKeys(KEY).open(doc).header.id == header.id
