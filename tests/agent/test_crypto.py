"""Tests for agent.crypto: the AES-256-GCM primitive, our envelope format, and its failure modes.

Fixed vectors live in ``tests/agent/vectors/envelope.json``. They were written once by running
this module by hand (``.venv/bin/python -m tests.agent.test_crypto --write-vectors``) and are
only ever rewritten on purpose, when the stored format changes (which breaks every vault on
disk). The tests recompute them with the same deterministic random source and compare byte for
byte, and open the stored blobs without recomputing anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.crypto import (
    KDF_DEFAULT_ITERATIONS,
    KDF_MAX_ITERATIONS,
    KDF_MIN_ITERATIONS,
    NONCE_BYTES,
    Envelope,
    KeySource,
    KeystoreHeader,
    MasterKey,
    SealedValue,
    SecretBytes,
    _aad,
    _open,
    _seal,
    create_keystore,
    fingerprint,
    generate_key_file,
    unlock_keystore,
)
from common.errors import ConfigError, IntegrityError

VECTORS = Path(__file__).parent / "vectors" / "envelope.json"
FIXED_CLOCK = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
VECTOR_KEY_FILE_KEY = bytes(range(32))
VECTOR_PASSPHRASE = "correct horse battery staple"
VECTOR_ITERATIONS = 100_000
# (secret id, version, KEK version, plaintext)
VECTOR_VALUES: list[tuple[str, int, int, bytes]] = [
    ("sec_aaaaaaaaaaaaaaaaaaaaaaaaaa", 1, 1, b"hunter2"),
    ("sec_aaaaaaaaaaaaaaaaaaaaaaaaaa", 2, 1, "pässwörd ✓".encode()),
    ("sec_bbbbbbbbbbbbbbbbbbbbbbbbbb", 1, 2, bytes(range(256))),
    ("sec_cccccccccccccccccccccccccc", 7, 2, b""),
]


class CounterRng:
    """Deterministic bytes: the stream SHA-256(seed || counter), counter = 0, 1, 2, ...

    Each call takes the next ``n`` bytes of the stream (left-over bytes carry to the next call),
    so the output depends only on the seed and the sequence of requested lengths.
    """

    def __init__(self, seed: str) -> None:
        self._seed = seed.encode()
        self._counter = 0
        self._buffer = b""

    def __call__(self, n: int) -> bytes:
        while len(self._buffer) < n:
            block = self._seed + self._counter.to_bytes(8, "big")
            self._buffer += hashlib.sha256(block).digest()
            self._counter += 1
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


def refused(call: Callable[[], object], *never: bytes) -> IntegrityError:
    """Run ``call``; it must raise exactly IntegrityError, whose text shows none of ``never``."""
    try:
        result = call()
    except IntegrityError as exc:
        assert type(exc) is IntegrityError, type(exc)
        text = f"{exc!s} {exc!r} {exc.to_json()} {exc.args}"
        for data in never:
            if data:
                assert data.hex() not in text
                assert base64.b64encode(data).decode() not in text
                assert repr(data)[2:-1] not in text
        return exc
    except Exception as exc:  # any other type is the failure being tested for
        pytest.fail(f"expected IntegrityError, got {type(exc).__name__}: {exc}")
    pytest.fail(f"expected IntegrityError, but the call returned a {type(result).__name__}")


def key_file_source(key: bytes) -> KeySource:
    """A key-file source without touching the disk."""
    return KeySource("keyfile", SecretBytes(key))


# --------------------------------------------------------------------------- the primitive

# The GCM specification (McGrew & Viega, "The Galois/Counter Mode of Operation", submitted to
# NIST), test cases 13-16: AES-256 key, 96-bit IV. Test case 16 is test case 15 with AAD and a
# 60-byte plaintext.
GCM_K = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
GCM_IV = "cafebabefacedbaddecaf888"
GCM_P = (
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
GCM_C = (
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
)
GCM_CASES = {
    # name: (key, iv, plaintext, aad, ciphertext, tag)
    "tc13-empty": ("00" * 32, "00" * 12, "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"),
    "tc14-one-block": (
        "00" * 32,
        "00" * 12,
        "00" * 16,
        "",
        "cea7403d4d606b6e074ec5d3baf39d18",
        "d0d1c8a799996bf0265b98b5d48ab919",
    ),
    "tc15-no-aad": (GCM_K, GCM_IV, GCM_P, "", GCM_C, "b094dac5d93471bdec1a502270e3cc6c"),
    "tc16-aad": (
        GCM_K,
        GCM_IV,
        GCM_P[:120],
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        GCM_C[:120],
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
}


@pytest.mark.parametrize("case", GCM_CASES.values(), ids=GCM_CASES.keys())
def test_aes_256_gcm_known_answers(case: tuple[str, ...]) -> None:
    key, iv, plaintext, aad, ciphertext, tag = (bytes.fromhex(x) for x in case)
    aead = AESGCM(key)
    assert aead.encrypt(iv, plaintext, aad or None) == ciphertext + tag
    assert aead.decrypt(iv, ciphertext + tag, aad or None) == plaintext
    # our blob layout around the same primitive: version byte, nonce, ciphertext, tag
    assert _seal(aead, plaintext, aad, lambda n: iv) == b"\x01" + iv + ciphertext + tag


def test_gcm_known_answer_fails_closed_on_a_wrong_tag() -> None:
    key, iv, plaintext, aad, ciphertext, tag = (bytes.fromhex(x) for x in GCM_CASES["tc16-aad"])
    blob = b"\x01" + iv + ciphertext + bytes([tag[0] ^ 1]) + tag[1:]
    refused(lambda: _open(AESGCM(key), blob, aad), plaintext)


# --------------------------------------------------------------------------- fixed vectors


def build_vault_vector(kind: str) -> dict[str, Any]:
    """Make one vault's vector from a deterministic random source and the fixed clock."""
    rng = CounterRng(f"keyvault-test-vectors/{kind}")
    vault_id = f"vault-vectors-{kind}"
    if kind == "keyfile":
        source = key_file_source(VECTOR_KEY_FILE_KEY)
        header, master = create_keystore(vault_id, source, rng=rng, clock=lambda: FIXED_CLOCK)
        source_doc: dict[str, Any] = {"key_file_key_hex": VECTOR_KEY_FILE_KEY.hex()}
    else:
        source = KeySource.from_passphrase(VECTOR_PASSPHRASE)
        header, master = create_keystore(
            vault_id, source, iterations=VECTOR_ITERATIONS, rng=rng, clock=lambda: FIXED_CLOCK
        )
        source_doc = {"passphrase": VECTOR_PASSPHRASE}
    envelope = Envelope(vault_id, master, rng=rng)
    keks = {str(v): envelope.new_kek(v).hex() for v in (1, 2)}
    values = []
    for secret_id, version, kek_version, plaintext in VECTOR_VALUES:
        sealed = envelope.seal(secret_id, version, plaintext, kek_version)
        values.append(
            {
                "secret_id": secret_id,
                "version": version,
                "kek_version": sealed.kek_version,
                "plaintext_hex": plaintext.hex(),
                "wrapped_dek_hex": sealed.wrapped_dek.hex(),
                "ciphertext_hex": sealed.ciphertext.hex(),
            }
        )
    return {
        "vault_id": vault_id,
        "rng_seed": f"keyvault-test-vectors/{kind}",
        "source": source_doc,
        "keystore_header_json": header.to_json(),
        "master_key_fingerprint": fingerprint(master.material.reveal()),
        "wrapped_keks_hex": keks,
        "values": values,
    }


def build_vectors() -> dict[str, Any]:
    """The whole vector file."""
    return {
        "about": (
            "Fixed vectors of KeyVault's envelope format (agent/crypto.py). Random bytes come "
            "from a deterministic stream: block i = SHA-256(rng_seed || i as 8-byte big-endian), "
            "each request taking the next n bytes. Draw order: create_keystore (salt 16), then "
            "new_kek(1), new_kek(2) (key 32, nonce 12 each), then seal() per value (DEK 32, "
            "DEK-wrap nonce 12, value nonce 12). Clock: " + FIXED_CLOCK.isoformat() + ". "
            "Blob layout: 0x01 || nonce(12) || AES-256-GCM ciphertext || tag(16)."
        ),
        "vaults": {kind: build_vault_vector(kind) for kind in ("keyfile", "passphrase")},
    }


@pytest.fixture(scope="module")
def stored_vectors() -> dict[str, Any]:
    return json.loads(VECTORS.read_text(encoding="utf-8"))


def test_vectors_recompute_byte_for_byte(stored_vectors: dict[str, Any]) -> None:
    assert build_vectors() == stored_vectors


def _source_of(vault: dict[str, Any]) -> KeySource:
    if "passphrase" in vault["source"]:
        return KeySource.from_passphrase(vault["source"]["passphrase"])
    return key_file_source(bytes.fromhex(vault["source"]["key_file_key_hex"]))


@pytest.mark.parametrize("kind", ["keyfile", "passphrase"])
def test_stored_vectors_open(stored_vectors: dict[str, Any], kind: str) -> None:
    vault = stored_vectors["vaults"][kind]
    header = KeystoreHeader.from_json(vault["keystore_header_json"])
    assert header.vault_id == vault["vault_id"]
    if kind == "passphrase":
        assert (header.kdf, header.iterations) == ("pbkdf2-sha256", VECTOR_ITERATIONS)
    else:
        assert (header.kdf, header.iterations) == ("keyfile", 0)
    master = unlock_keystore(header, _source_of(vault))
    assert fingerprint(master.material.reveal()) == vault["master_key_fingerprint"]
    envelope = Envelope(header.vault_id, master)
    for version, wrapped in vault["wrapped_keks_hex"].items():
        envelope.load_kek(int(version), bytes.fromhex(wrapped))
    assert len(vault["values"]) == len(VECTOR_VALUES)
    for value in vault["values"]:
        sealed = SealedValue(
            value["kek_version"],
            bytes.fromhex(value["wrapped_dek_hex"]),
            bytes.fromhex(value["ciphertext_hex"]),
        )
        opened = envelope.open(value["secret_id"], value["version"], sealed)
        assert opened == bytes.fromhex(value["plaintext_hex"])


def test_vector_key_file_reads_as_raw_hex_and_base64(tmp_path: Path) -> None:
    forms = {
        "raw": VECTOR_KEY_FILE_KEY,
        "hex": VECTOR_KEY_FILE_KEY.hex().encode() + b"\n",
        "base64": base64.b64encode(VECTOR_KEY_FILE_KEY) + b"\n",
    }
    for name, content in forms.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert KeySource.from_key_file(path).secret.reveal() == VECTOR_KEY_FILE_KEY, name


def test_counter_rng_is_a_stream() -> None:
    a, b = CounterRng("s"), CounterRng("s")
    assert a(5) + a(40) + a(3) == b(48)
    assert CounterRng("t")(48) != CounterRng("s")(48)


# --------------------------------------------------------------------------- a vault to attack


@dataclass
class Vault:
    """A key-file vault with two KEKs and four sealed values, made with the real RNG."""

    key: bytes
    header: KeystoreHeader
    master: MasterKey
    envelope: Envelope
    keks: dict[int, bytes]
    a1: SealedValue  # secret A, version 1
    a2: SealedValue  # secret A, version 2
    b1: SealedValue  # secret B, version 1

    A = "sec_aaaaaaaaaaaaaaaaaaaaaaaaaa"
    B = "sec_bbbbbbbbbbbbbbbbbbbbbbbbbb"
    PLAIN = {
        ("A", 1): b"A-one: correct horse battery staple!",
        ("A", 2): b"A-two: a different, longer secret value",
        ("B", 1): b"B-one: the third secret value in this vault",
    }

    @property
    def plaintexts(self) -> tuple[bytes, ...]:
        return tuple(self.PLAIN.values())


@pytest.fixture
def vault() -> Vault:
    key = os.urandom(32)
    header, master = create_keystore("vault-under-test", key_file_source(key))
    envelope = Envelope(header.vault_id, master)
    keks = {1: envelope.new_kek(1), 2: envelope.new_kek(2)}
    p = Vault.PLAIN
    return Vault(
        key,
        header,
        master,
        envelope,
        keks,
        envelope.seal(Vault.A, 1, p[("A", 1)], 1),
        envelope.seal(Vault.A, 2, p[("A", 2)], 2),
        envelope.seal(Vault.B, 1, p[("B", 1)], 1),
    )


def _flips(blob: bytes) -> list[bytes]:
    """Every single-byte change of ``blob`` (three different bit patterns per position)."""
    out = []
    for i in range(len(blob)):
        for mask in (0x01, 0x80, 0xFF):
            changed = bytearray(blob)
            changed[i] ^= mask
            out.append(bytes(changed))
    return out


def test_the_untouched_vault_opens(vault: Vault) -> None:
    env = vault.envelope
    assert env.open(Vault.A, 1, vault.a1) == Vault.PLAIN[("A", 1)]
    assert env.open(Vault.A, 2, vault.a2) == Vault.PLAIN[("A", 2)]
    assert env.open(Vault.B, 1, vault.b1) == Vault.PLAIN[("B", 1)]


def test_every_single_byte_change_of_a_ciphertext_is_refused(vault: Vault) -> None:
    blobs = _flips(vault.a1.ciphertext)
    assert len(blobs) == 3 * len(vault.a1.ciphertext)
    for blob in blobs:
        refused(
            lambda b=blob: vault.envelope.open(Vault.A, 1, replace(vault.a1, ciphertext=b)),
            *vault.plaintexts,
        )


def test_every_single_byte_change_of_a_wrapped_dek_is_refused(vault: Vault) -> None:
    for blob in _flips(vault.a1.wrapped_dek):
        refused(
            lambda b=blob: vault.envelope.open(Vault.A, 1, replace(vault.a1, wrapped_dek=b)),
            *vault.plaintexts,
        )


def test_every_single_byte_change_of_a_wrapped_kek_is_refused(vault: Vault) -> None:
    for blob in _flips(vault.keks[1]):
        refused(lambda b=blob: vault.envelope.load_kek(1, b))


@pytest.mark.parametrize("part", ["ciphertext", "wrapped_dek"])
def test_every_truncation_is_refused(vault: Vault, part: str) -> None:
    blob: bytes = getattr(vault.a1, part)
    for length in range(len(blob)):
        cut = replace(vault.a1, **{part: blob[:length]})
        refused(lambda s=cut: vault.envelope.open(Vault.A, 1, s), *vault.plaintexts)
    # and anything appended
    longer = replace(vault.a1, **{part: blob + b"\x00"})
    refused(lambda: vault.envelope.open(Vault.A, 1, longer), *vault.plaintexts)


def test_every_truncation_of_a_wrapped_kek_is_refused(vault: Vault) -> None:
    blob = vault.keks[1]
    for length in range(len(blob)):
        refused(lambda b=blob[:length]: vault.envelope.load_kek(1, b))


def test_values_swapped_between_secrets_are_refused(vault: Vault) -> None:
    env, a1, b1 = vault.envelope, vault.a1, vault.b1
    never = vault.plaintexts
    refused(lambda: env.open(Vault.B, 1, a1), *never)  # A's whole row in B's place
    refused(lambda: env.open(Vault.A, 1, b1), *never)
    refused(lambda: env.open(Vault.A, 1, replace(a1, ciphertext=b1.ciphertext)), *never)
    refused(lambda: env.open(Vault.B, 1, replace(b1, ciphertext=a1.ciphertext)), *never)
    refused(lambda: env.open(Vault.A, 1, replace(a1, wrapped_dek=b1.wrapped_dek)), *never)


def test_values_swapped_between_versions_are_refused(vault: Vault) -> None:
    env, a1, a2 = vault.envelope, vault.a1, vault.a2
    never = vault.plaintexts
    refused(lambda: env.open(Vault.A, 2, a1), *never)
    refused(lambda: env.open(Vault.A, 1, a2), *never)
    refused(lambda: env.open(Vault.A, 3, a2), *never)
    refused(lambda: env.open(Vault.A, 2, replace(a2, ciphertext=a1.ciphertext)), *never)
    refused(lambda: env.open(Vault.A, 1, replace(a1, ciphertext=a2.ciphertext)), *never)
    # same KEK for both versions, so only the bound version number tells them apart
    a1_again = env.seal(Vault.A, 1, b"v1", 1)
    a2_same_kek = env.seal(Vault.A, 2, b"v2", 1)
    refused(lambda: env.open(Vault.A, 1, replace(a1_again, wrapped_dek=a2_same_kek.wrapped_dek)))
    refused(lambda: env.open(Vault.A, 2, replace(a2_same_kek, ciphertext=a1_again.ciphertext)))


def test_another_vault_id_is_refused(vault: Vault) -> None:
    # same master key, other vault: the wrapped KEK is bound to the vault id
    other = Envelope("another-vault", vault.master)
    refused(lambda: other.load_kek(1, vault.keks[1]))
    # even with the very same KEK bytes (same RNG stream), values are bound to the vault id
    mine = Envelope("vault-x", vault.master, rng=CounterRng("same"))
    theirs = Envelope("vault-y", vault.master, rng=CounterRng("same"))
    mine.new_kek(1)
    theirs.new_kek(1)
    sealed = mine.seal(Vault.A, 1, b"bound to vault-x", 1)
    assert mine.open(Vault.A, 1, sealed) == b"bound to vault-x"
    refused(lambda: theirs.open(Vault.A, 1, sealed), b"bound to vault-x")


def test_a_wrong_key_file_is_refused(vault: Vault) -> None:
    refused(lambda: unlock_keystore(vault.header, key_file_source(os.urandom(32))), vault.key)
    near = bytes([vault.key[0] ^ 1]) + vault.key[1:]
    refused(lambda: unlock_keystore(vault.header, key_file_source(near)), vault.key)
    # a passphrase where a key file is expected
    refused(lambda: unlock_keystore(vault.header, KeySource.from_passphrase("x" * 40)))
    # and a master key derived from another key cannot unwrap the KEKs
    _, wrong = create_keystore(vault.header.vault_id, key_file_source(os.urandom(32)))
    refused(lambda: Envelope(vault.header.vault_id, wrong).load_kek(1, vault.keks[1]))


@pytest.fixture(scope="module")
def passphrase_store() -> tuple[KeystoreHeader, KeySource]:
    """A keystore at the default 600,000 iterations (made once: it costs ~0.1 s)."""
    source = KeySource.from_passphrase("the right passphrase, long")
    header, _ = create_keystore("vault-pp", source)
    assert header.iterations == KDF_DEFAULT_ITERATIONS == 600_000
    return header, source


def _edited(header: KeystoreHeader, **changes: Any) -> KeystoreHeader:
    doc = json.loads(header.to_json())
    doc.update(changes)
    return KeystoreHeader.from_json(json.dumps(doc))


def test_a_wrong_passphrase_is_refused(passphrase_store: tuple[KeystoreHeader, KeySource]) -> None:
    header, source = passphrase_store
    unlock_keystore(header, source)  # the right one opens
    refused(
        lambda: unlock_keystore(header, KeySource.from_passphrase("the wrong passphrase, long")),
        source.secret.reveal(),
    )
    refused(lambda: unlock_keystore(header, key_file_source(os.urandom(32))))


@pytest.mark.parametrize(
    "changes",
    [
        {"iterations": 100_000},
        {"iterations": 50_000},
        {"iterations": 599_999},
        {"iterations": 600_001},
        {"iterations": 10_000_001},
        {"iterations": 10**15},
        {"iterations": -1},
        {"salt": base64.b64encode(b"\x00" * 16).decode()},
        {"salt": base64.b64encode(b"\x00" * 15).decode()},
        {"salt": ""},
        {"kdf": "keyfile"},
        {"vault_id": "vault-other"},
        {"created_at": "2020-01-01T00:00:00+00:00"},
        {"mac": base64.b64encode(b"\x00" * 32).decode()},
        {"mac": ""},
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())[:40],
)
def test_an_edited_header_is_refused(
    passphrase_store: tuple[KeystoreHeader, KeySource], changes: dict[str, Any]
) -> None:
    header, source = passphrase_store
    edited = _edited(header, **changes)
    refused(lambda: unlock_keystore(edited, source), source.secret.reveal())


def test_every_single_byte_change_of_the_header_mac_is_refused(vault: Vault) -> None:
    # (key-file header: HKDF, so trying every position is fast)
    source = key_file_source(vault.key)
    for mac in _flips(vault.header.mac):
        refused(lambda m=mac: unlock_keystore(replace(vault.header, mac=m), source), vault.key)


def test_a_malformed_header_is_refused(passphrase_store: tuple[KeystoreHeader, KeySource]) -> None:
    header, _ = passphrase_store
    text = header.to_json()
    doc = json.loads(text)
    bad = [
        "",
        "{",
        "[]",
        text[: len(text) // 2],
        json.dumps({k: v for k, v in doc.items() if k != "mac"}),
        json.dumps({**doc, "format": 2}),
        json.dumps({**doc, "kdf": "scrypt"}),
        json.dumps({**doc, "iterations": "many"}),
        json.dumps({**doc, "salt": "not base64!"}),
        json.dumps({**doc, "salt": 5}),
        json.dumps({**doc, "mac": None}),
        json.dumps({**doc, "salt": "sälz"}),
        text.replace(f'"iterations": {header.iterations}', '"iterations": Infinity'),
        '"a string"',
        "5",
        "null",
    ]
    for document in bad:
        refused(lambda d=document: KeystoreHeader.from_json(d))


def test_a_kek_under_the_wrong_version_number_is_refused(vault: Vault) -> None:
    env = vault.envelope
    refused(lambda: env.load_kek(2, vault.keks[1]))
    refused(lambda: env.load_kek(1, vault.keks[2]))
    refused(lambda: env.load_kek(3, vault.keks[1]))
    # a value whose row claims another (loaded) KEK version than the one that wrapped its DEK
    refused(lambda: env.open(Vault.A, 1, replace(vault.a1, kek_version=2)), *vault.plaintexts)


def test_an_unknown_kek_version_is_refused(vault: Vault) -> None:
    env = vault.envelope
    refused(lambda: env.open(Vault.A, 1, replace(vault.a1, kek_version=99)), *vault.plaintexts)
    refused(lambda: env.seal(Vault.A, 3, b"new value", 99), b"new value")
    refused(lambda: env.rewrap(Vault.A, 1, vault.a1, 99), *vault.plaintexts)
    env.unload_kek(1)
    refused(lambda: env.open(Vault.A, 1, vault.a1), *vault.plaintexts)


def test_an_unknown_blob_format_is_refused(vault: Vault) -> None:
    for part in ("ciphertext", "wrapped_dek"):
        blob: bytes = getattr(vault.a1, part)
        for first in (0x00, 0x02, 0xFF):
            changed = replace(vault.a1, **{part: bytes([first]) + blob[1:]})
            refused(lambda s=changed: vault.envelope.open(Vault.A, 1, s), *vault.plaintexts)


def test_aux_keys_are_bound_to_vault_and_purpose(vault: Vault) -> None:
    env = vault.envelope
    wrapped = env.wrap_aux("audit", b"k" * 32)
    assert env.unwrap_aux("audit", wrapped) == b"k" * 32
    refused(lambda: env.unwrap_aux("other", wrapped), b"k" * 32)
    refused(lambda: Envelope("another-vault", vault.master).unwrap_aux("audit", wrapped))
    # an aux blob is not a KEK and a KEK is not an aux blob
    refused(lambda: env.load_kek(1, wrapped))
    refused(lambda: env.unwrap_aux("audit", vault.keks[1]))


# --------------------------------------------------------------------------- nonces


def test_no_repeated_nonce_in_a_million_seals() -> None:
    key = AESGCM(os.urandom(32))
    aad = _aad("value", "vault", "sec", 1)
    seen: set[bytes] = set()
    for _ in range(1_000_000):
        seen.add(_seal(key, b"", aad, os.urandom)[1 : 1 + NONCE_BYTES])
    assert len(seen) == 1_000_000


def test_seal_draws_a_fresh_nonce_and_dek_each_time(vault: Vault) -> None:
    one = vault.envelope.seal(Vault.A, 1, b"same", 1)
    two = vault.envelope.seal(Vault.A, 1, b"same", 1)
    assert one.ciphertext[1:13] != two.ciphertext[1:13]
    assert one.wrapped_dek != two.wrapped_dek
    assert one.ciphertext != two.ciphertext


# --------------------------------------------------------------------------- key sources


def test_passphrases_shorter_than_12_characters_are_refused() -> None:
    for short in ("", "a", "x" * 11, "ü" * 11):
        with pytest.raises(ConfigError, match="at least 12 characters"):
            KeySource.from_passphrase(short)
    assert KeySource.from_passphrase("x" * 12).kind == "passphrase"
    assert KeySource.from_passphrase("ü" * 12).secret.reveal() == ("ü" * 12).encode()


def test_iterations_below_the_minimum_are_refused() -> None:
    source = KeySource.from_passphrase("a long enough passphrase")
    for low in (0, 1, 50_000, KDF_MIN_ITERATIONS - 1):
        with pytest.raises(ConfigError) as info:
            create_keystore("v", source, iterations=low, rng=CounterRng("x"))
        assert "100,000" in str(info.value)
        assert type(info.value) is ConfigError
    header, _ = create_keystore("v", source, iterations=KDF_MIN_ITERATIONS)
    assert header.iterations == KDF_MIN_ITERATIONS == 100_000


def test_iterations_above_the_maximum_are_refused() -> None:
    source = KeySource.from_passphrase("a long enough passphrase")
    with pytest.raises(ConfigError, match="10,000,000"):
        create_keystore("v", source, iterations=KDF_MAX_ITERATIONS + 1)


def test_a_header_below_the_minimum_is_refused_before_deriving() -> None:
    # made with a lowered constant would be impossible; edit a valid header instead
    source = KeySource.from_passphrase("a long enough passphrase")
    header, _ = create_keystore("v", source, iterations=KDF_MIN_ITERATIONS)
    refused(lambda: unlock_keystore(replace(header, iterations=1), source))
    refused(lambda: unlock_keystore(replace(header, iterations=0), source))


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        os.urandom(31),
        os.urandom(33),
        os.urandom(64),
        os.urandom(31).hex().encode(),
        os.urandom(33).hex().encode() + b"\n",
        os.urandom(16).hex().encode(),  # 32 characters of hex: a 16-byte key, not a raw key
        base64.b64encode(os.urandom(24)),  # 32 characters of base64: a 24-byte key
        base64.b64encode(os.urandom(31)) + b"\n",
        base64.b64encode(os.urandom(33)),
        base64.urlsafe_b64encode(b"\xfb" * 32),  # URL-safe alphabet is not accepted
        b"z" * 64,
        b"x" * 5000,
    ],
    ids=[
        "empty",
        "newline",
        "raw31",
        "raw33",
        "raw64",
        "hex31",
        "hex33",
        "hex16-is-32-chars",
        "b64-24-is-32-chars",
        "b64-31",
        "b64-33",
        "urlsafe-b64",
        "64-non-hex",
        "too-large",
    ],
)
def test_a_key_file_that_is_not_32_bytes_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        KeySource.from_key_file(path)
    assert type(info.value) is ConfigError
    assert str(path) in str(info.value)


def test_key_file_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        KeySource.from_key_file(tmp_path / "missing.key")
    with pytest.raises(ConfigError, match="cannot be read"):
        KeySource.from_key_file(tmp_path)  # a directory


def test_an_endless_key_file_is_refused_without_reading_it_all() -> None:
    with pytest.raises(ConfigError, match="larger than"):
        KeySource.from_key_file("/dev/zero")


def test_valid_key_files_of_each_form(tmp_path: Path) -> None:
    key = os.urandom(32)
    for name, content in {
        "raw": key,
        "hex": key.hex().encode(),
        "HEX-newline": key.hex().upper().encode() + b"\r\n",
        "b64": base64.b64encode(key),
        "b64-spaces": b"  " + base64.b64encode(key) + b"\n\n",
    }.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert KeySource.from_key_file(path).secret.reveal() == key, name


def test_generate_key_file_is_private_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    old_umask = os.umask(0)  # even with a permissive umask the file is 0600
    try:
        generate_key_file(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_bytes()
    assert len(key) == 32
    assert KeySource.from_key_file(path).secret.reveal() == key
    with pytest.raises(FileExistsError):
        generate_key_file(path)
    assert path.read_bytes() == key  # untouched
    other = generate_key_file(tmp_path / "second.key")
    assert other.read_bytes() != key


def test_reprs_never_show_key_bytes() -> None:
    rng = CounterRng("repr")
    key = os.urandom(32)
    phrase = "a passphrase that must not show"
    sources = [key_file_source(key), KeySource.from_passphrase(phrase)]
    _, master = create_keystore("vault-repr", sources[0], rng=rng)
    replay = CounterRng("repr")
    replay(16)  # the salt
    envelope = Envelope("vault-repr", master, rng=rng)
    envelope.new_kek(1)
    kek = replay(32)
    secrets_ = [
        key,
        phrase.encode(),
        master.material.reveal(),
        master.subkey("kek-wrap"),
        master.subkey("keystore-header"),
        kek,
    ]
    objects: list[object] = [*sources, master, SecretBytes(key), master.material, envelope]
    for obj in objects:
        for text in (repr(obj), str(obj), f"{obj}", f"{obj!r}", repr([obj]), repr({"k": obj})):
            for secret in secrets_:
                for form in (
                    secret.hex(),
                    secret.hex().upper(),
                    base64.b64encode(secret).decode(),
                    base64.urlsafe_b64encode(secret).decode().rstrip("="),
                    repr(secret),
                    repr(secret)[2:-1],
                ):
                    assert form not in text, (type(obj).__name__, text)
            assert phrase not in text
    assert "redacted" in repr(master) and "redacted" in repr(sources[0])
    assert repr(envelope) == "Envelope(vault_id='vault-repr', keks=[1])"


def test_secret_bytes_compare_by_value_in_constant_time_api() -> None:
    assert SecretBytes(b"abc") == SecretBytes(b"abc")
    assert SecretBytes(b"abc") != SecretBytes(b"abd")
    assert SecretBytes(b"abc") != b"abc"
    assert len(SecretBytes(b"abc")) == 3
    assert hash(SecretBytes(b"abc")) == hash(SecretBytes(b"abc"))


# --------------------------------------------------------------------------- rotation and rekey


def test_rewrap_to_a_new_kek_then_unload_the_old_one(vault: Vault) -> None:
    env = vault.envelope
    moved = env.rewrap(Vault.A, 1, vault.a1, 2)
    assert moved.kek_version == 2
    assert moved.ciphertext == vault.a1.ciphertext  # the value itself is not re-encrypted
    assert moved.wrapped_dek != vault.a1.wrapped_dek
    env.unload_kek(1)
    assert env.open(Vault.A, 1, moved) == Vault.PLAIN[("A", 1)]
    refused(lambda: env.open(Vault.A, 1, vault.a1), *vault.plaintexts)  # the old sealed form
    # the re-wrapped DEK is bound like the original: not under KEK 1's number, not elsewhere
    refused(lambda: env.open(Vault.B, 1, moved), *vault.plaintexts)
    refused(lambda: env.open(Vault.A, 2, moved), *vault.plaintexts)


def test_rewrap_in_a_fresh_process_after_rotation(vault: Vault) -> None:
    """Only KEK 3 survives; a new envelope that loads it from storage opens the moved value."""
    env = vault.envelope
    kek3 = env.new_kek(3)
    moved = [env.rewrap(Vault.A, 1, vault.a1, 3), env.rewrap(Vault.B, 1, vault.b1, 3)]
    fresh = Envelope(
        vault.header.vault_id, unlock_keystore(vault.header, key_file_source(vault.key))
    )
    fresh.load_kek(3, kek3)
    assert fresh.open(Vault.A, 1, moved[0]) == Vault.PLAIN[("A", 1)]
    assert fresh.open(Vault.B, 1, moved[1]) == Vault.PLAIN[("B", 1)]
    refused(lambda: fresh.open(Vault.A, 1, vault.a1), *vault.plaintexts)


def test_rewrap_refuses_a_damaged_value_before_the_old_kek_is_gone(vault: Vault) -> None:
    damaged = replace(
        vault.a1, ciphertext=vault.a1.ciphertext[:-1] + bytes([vault.a1.ciphertext[-1] ^ 1])
    )
    refused(lambda: vault.envelope.rewrap(Vault.A, 1, damaged, 2), *vault.plaintexts)
    refused(lambda: vault.envelope.rewrap(Vault.B, 1, vault.a1, 2), *vault.plaintexts)


def test_rekey_rewraps_keks_for_a_new_master(vault: Vault) -> None:
    new_source = KeySource.from_passphrase("the new master passphrase")
    new_header, new_master = create_keystore(
        vault.header.vault_id, new_source, iterations=KDF_MIN_ITERATIONS
    )
    env = vault.envelope
    rewrapped = {v: env.rewrap_kek_for(new_master, v, w) for v, w in vault.keks.items()}
    aux = env.wrap_aux("audit", b"a" * 32)
    aux_new = env.rewrap_aux_for(new_master, "audit", aux)
    fresh = Envelope(vault.header.vault_id, unlock_keystore(new_header, new_source))
    for version, wrapped in rewrapped.items():
        fresh.load_kek(version, wrapped)
    assert fresh.open(Vault.A, 2, vault.a2) == Vault.PLAIN[("A", 2)]
    assert fresh.unwrap_aux("audit", aux_new) == b"a" * 32
    # the old master cannot open the new wrapping, nor the new master the old one
    refused(lambda: Envelope(vault.header.vault_id, vault.master).load_kek(1, rewrapped[1]))
    refused(lambda: fresh.load_kek(1, vault.keks[1]))
    refused(lambda: unlock_keystore(new_header, key_file_source(vault.key)))
    env.use_master(new_master)
    env.load_kek(2, rewrapped[2])  # after use_master the envelope reads the new wrapping
    assert env.open(Vault.A, 2, vault.a2) == Vault.PLAIN[("A", 2)]


# --------------------------------------------------------------------------- writing vectors


def _write_vectors() -> None:
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    VECTORS.write_text(json.dumps(build_vectors(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {VECTORS}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-vectors"]:
        sys.exit("usage: python -m tests.agent.test_crypto --write-vectors  (format changes only)")
    _write_vectors()
