"""Sealed labels open with the organisation's key; otherwise the opaque id is shown."""

from __future__ import annotations

from apps.core.labels import LabelOpener, open_label
from common.metadata_key import MetadataKey


def test_open_with_the_key() -> None:
    key = MetadataKey.generate()
    fields = {"name": "db/password", "description": "primary", "labels": {"team": "core"}}
    sealed = key.seal("vlt_1", "sec_1", fields)
    opened = open_label(key, "vlt_1", "sec_1", sealed)
    assert opened.state == "open" and opened.display == "db/password"
    assert opened.description == "primary" and opened.labels == {"team": "core"}
    assert opened.note == ""


def test_without_key_or_label_or_with_the_wrong_one() -> None:
    key = MetadataKey.generate()
    sealed = key.seal("vlt_1", "sec_1", {"name": "db/password"})
    no_key = open_label(None, "vlt_1", "sec_1", sealed)
    assert (no_key.state, no_key.display, no_key.name) == ("no_key", "sec_1", None)
    assert open_label(key, "vlt_1", "sec_1", None).state == "no_label"
    other = MetadataKey.generate()
    assert open_label(other, "vlt_1", "sec_1", sealed).state == "unreadable"
    # a label moved to another secret or vault does not open either
    assert open_label(key, "vlt_1", "sec_2", sealed).state == "unreadable"
    assert open_label(key, "vlt_2", "sec_1", sealed).display == "sec_1"
    assert open_label(key, "vlt_1", "sec_1", "garbage").state == "unreadable"


def test_opener_for_inventory_items() -> None:
    key = MetadataKey.generate()
    opener = LabelOpener(key, "vlt_1")
    item = {"secret_id": "sec_9", "label": key.seal("vlt_1", "sec_9", {"name": "api/key"})}
    assert opener.open(item).display == "api/key"
    assert opener.has_key and key.to_text() not in repr(opener)
    assert not LabelOpener(None, "vlt_1").has_key
