"""Sealed labels are padded to size buckets, so the control plane sees a bucket, not a name's
length; labels sealed before padding existed still open."""

from __future__ import annotations

import base64
import json
import os

import pytest

from common.errors import IntegrityError
from common.metadata_key import (
    BUCKETS,
    LABEL_PREFIX,
    MAX_LABEL_CHARS,
    MAX_PLAIN,
    MetadataKey,
    padded_size,
)

VAULT, SECRET = "vlt_1", "sec_1"


def _fields(name: str) -> dict[str, object]:
    return {"name": name, "description": "", "labels": {}}


def test_names_in_one_bucket_seal_to_equal_lengths() -> None:
    key = MetadataKey.generate()
    short = key.seal(VAULT, SECRET, _fields("db"))
    longer = key.seal(VAULT, SECRET, _fields("payments/db-password"))
    assert len(short) == len(longer)
    assert key.open(VAULT, SECRET, short) == _fields("db")
    assert key.open(VAULT, SECRET, longer) == _fields("payments/db-password")


def test_every_name_length_gives_one_of_a_few_label_lengths() -> None:
    key = MetadataKey.generate()
    lengths = {len(key.seal(VAULT, SECRET, _fields("n" * n))) for n in range(1, 201)}
    assert len(lengths) <= 4, sorted(lengths)  # 200 name lengths, a handful of buckets
    labels = {str(n): "v" * 40 for n in range(32)}
    big = {"name": "x" * 200, "description": "d" * 1000, "labels": labels}
    sealed = key.seal(VAULT, SECRET, big)
    assert len(sealed) <= MAX_LABEL_CHARS
    assert key.open(VAULT, SECRET, sealed) == big


@pytest.mark.parametrize("size", [1, 31, 32, 33, 64, 100, 4096, 4097, 5000, MAX_PLAIN])
def test_padded_size_is_a_bucket_at_least_as_large(size: int) -> None:
    padded = padded_size(size)
    assert padded >= size
    assert padded in (*BUCKETS, MAX_PLAIN)
    assert padded == padded_size(padded)  # a bucket pads to itself
    assert padded_size(MAX_PLAIN + 1) == MAX_PLAIN + 1  # too long for a label: left alone


def test_old_unpadded_labels_still_open() -> None:
    raw = os.urandom(32)
    key = MetadataKey(raw)
    # a label exactly as the key sealed it before padding: nonce || AES-GCM(compact JSON)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    plain = json.dumps(_fields("old/name"), sort_keys=True, separators=(",", ":")).encode()
    aad = b"keyvault-label\x00" + VAULT.encode() + b"\x00" + SECRET.encode()
    body = nonce + AESGCM(raw).encrypt(nonce, plain, aad)
    old = LABEL_PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")
    assert key.open(VAULT, SECRET, old) == _fields("old/name")
    assert len(old) < len(key.seal(VAULT, SECRET, _fields("old/name")))  # new ones are padded
    with pytest.raises(IntegrityError):
        key.open(VAULT, "sec_2", old)
