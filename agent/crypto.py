"""Envelope encryption for the agent: master key, versioned KEKs, per-version DEKs, AES-256-GCM.

The layers (brief §3):

* the **master key** comes from a 32-byte key file or a passphrase stretched with
  PBKDF2-HMAC-SHA256; its parameters live in a :class:`KeystoreHeader` that is authenticated
  with a key derived from the master key, so a lowered iteration count is detected;
* **KEKs** are random, versioned, and wrapped by the master key;
* a **DEK** is random per secret version and wrapped by a KEK;
* a **value** is sealed with its DEK under AAD binding vault id, secret id and version; the
  DEK's wrapping binds the same fields plus the KEK version (the key id). A ciphertext or
  wrapped DEK moved to another row, version or KEK fails to open, and a KEK rotation re-wraps
  DEKs without touching value ciphertexts.

Every failure to open anything raises the one opaque :class:`~common.errors.IntegrityError`.
The random source and the clock are injectable so tests can use fixed vectors.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from agent import platform
from common.errors import ConfigError, IntegrityError

KEY_BYTES = 32
MAX_KEY_FILE_BYTES = 4096  # a key file is 32-90 bytes; never read /dev/zero or a log into memory
NONCE_BYTES = 12
TAG_BYTES = 16
BLOB_FORMAT = 1
KDF_MIN_ITERATIONS = 100_000
KDF_MAX_ITERATIONS = 10_000_000  # the CLI's and the API's bound; a header above it is forged
KDF_DEFAULT_ITERATIONS = 600_000
HEADER_FORMAT = 1
DEK_CACHE_SECRETS = 4096  # secrets whose unwrapped DEK keys (AES-GCM objects) are kept
DEK_CACHE_VERSIONS = 4  # versions kept per secret (reads of old versions are rare)

Random = Callable[[int], bytes]
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The default clock: timezone-aware UTC now."""
    return datetime.now(UTC)


class SecretBytes:
    """Bytes that never show themselves in ``repr``/``str`` (keys, passphrases, values)."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    def reveal(self) -> bytes:
        """The raw bytes; call only where they are used."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return "SecretBytes(**redacted**)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretBytes) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value).digest())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    if not isinstance(text, str):
        raise IntegrityError()
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise IntegrityError() from exc


@functools.lru_cache(maxsize=16384)
def _aad(*parts: str | int) -> bytes:
    """Canonical, unambiguous associated data for a tuple of fields (memoised: ids, not secrets)."""
    return json.dumps(list(parts), separators=(",", ":")).encode("utf-8")


def _seal(key: AESGCM, plaintext: bytes, aad: bytes, rng: Random) -> bytes:
    nonce = rng(NONCE_BYTES)
    return bytes([BLOB_FORMAT]) + nonce + key.encrypt(nonce, plaintext, aad)


def _open(key: AESGCM, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < 1 + NONCE_BYTES + TAG_BYTES or blob[0] != BLOB_FORMAT:
        raise IntegrityError()
    try:
        return key.decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], aad)
    except (InvalidTag, ValueError) as exc:
        raise IntegrityError() from exc


def _hkdf(key: bytes, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose.encode()
    ).derive(key)


# --------------------------------------------------------------------------- master key


@dataclass(frozen=True, repr=False)
class MasterKey:
    """The unlocked customer master key and the subkeys derived from it."""

    material: SecretBytes

    def subkey(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (HKDF-SHA256, ``info=purpose``)."""
        return _hkdf(self.material.reveal(), f"keyvault/{purpose}")

    def __repr__(self) -> str:
        return "MasterKey(**redacted**)"


@dataclass(frozen=True, repr=False)
class KeySource:
    """Where the master key comes from: a key file's bytes or a passphrase."""

    kind: str  # "keyfile" | "passphrase"
    secret: SecretBytes

    @classmethod
    def from_key_file(cls, path: str | Path) -> KeySource:
        """Read a key file: 32 raw bytes, or 32 bytes as hex or base64 text."""
        p = Path(path)
        try:
            with p.open("rb") as fh:
                raw = fh.read(MAX_KEY_FILE_BYTES + 1)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"master key file {p} does not exist; create one with "
                "`keyvault agent init` or point VAULT_MASTER_KEY_FILE at it"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"master key file {p} cannot be read: {exc.strerror}") from exc
        if len(raw) > MAX_KEY_FILE_BYTES:
            raise ConfigError(
                f"master key file {p} is larger than {MAX_KEY_FILE_BYTES} bytes; it must hold "
                "exactly 32 bytes (raw, hex or base64)"
            )
        return cls("keyfile", SecretBytes(parse_key_bytes(raw, str(p))))

    @classmethod
    def from_passphrase(cls, passphrase: str) -> KeySource:
        """A passphrase, stretched with PBKDF2 at unlock."""
        if len(passphrase) < 12:
            raise ConfigError("the master passphrase must be at least 12 characters long")
        return cls("passphrase", SecretBytes(passphrase.encode("utf-8")))

    def __repr__(self) -> str:
        return f"KeySource(kind={self.kind!r}, secret=**redacted**)"


def parse_key_bytes(raw: bytes, where: str) -> bytes:
    """Accept 32 raw bytes or 32 bytes encoded as hex or base64 text.

    Text is tried first: 32 characters of hex or base64 are a 16- or 24-byte key written as
    text, refused rather than taken as a raw key (a random raw key is practically never
    valid hex or base64).
    """
    text = raw.strip()
    for decode in (binascii.unhexlify, lambda t: base64.b64decode(t, validate=True)):
        try:
            key = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(key) == KEY_BYTES:
            return key
        if len(raw) == KEY_BYTES:
            raise ConfigError(
                f"master key file {where} holds a {len(key)}-byte key written as hex or "
                "base64 text; a master key must be exactly 32 bytes"
            )
    if len(raw) == KEY_BYTES:
        return raw
    raise ConfigError(
        f"master key file {where} must hold exactly 32 bytes (raw, hex or base64); "
        f"it holds {len(raw)} bytes that are none of these"
    )


def generate_key_file(path: str | Path, rng: Random = os.urandom) -> Path:
    """Write a new random 32-byte key file readable only by its owner; refuse to overwrite."""
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | platform.OPEN_FLAGS, 0o600)
    try:
        os.write(fd, rng(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    return p


@dataclass(frozen=True)
class KeystoreHeader:
    """The authenticated parameters of a vault's master key (stored beside the data)."""

    vault_id: str
    kdf: str  # "keyfile" | "pbkdf2-sha256"
    iterations: int
    salt: bytes
    created_at: str
    mac: bytes = field(default=b"")
    format: int = HEADER_FORMAT

    def signed_fields(self) -> bytes:
        """The canonical bytes the header MAC covers."""
        return _aad(
            "keystore",
            self.format,
            self.vault_id,
            self.kdf,
            self.iterations,
            _b64(self.salt),
            self.created_at,
        )

    def to_json(self) -> str:
        """Serialise for the ``keystore.json`` file."""
        return json.dumps(
            {
                "format": self.format,
                "vault_id": self.vault_id,
                "kdf": self.kdf,
                "iterations": self.iterations,
                "salt": _b64(self.salt),
                "created_at": self.created_at,
                "mac": _b64(self.mac),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> KeystoreHeader:
        """Parse a header; any malformation is an integrity failure."""
        try:
            doc: dict[str, Any] = json.loads(text)
            header = cls(
                vault_id=str(doc["vault_id"]),
                kdf=str(doc["kdf"]),
                iterations=int(doc["iterations"]),
                salt=_unb64(doc["salt"]),
                created_at=str(doc["created_at"]),
                mac=_unb64(doc["mac"]),
                format=int(doc["format"]),
            )
        except (ValueError, KeyError, TypeError, OverflowError) as exc:
            raise IntegrityError() from exc
        if header.format != HEADER_FORMAT or header.kdf not in ("keyfile", "pbkdf2-sha256"):
            raise IntegrityError()
        return header


def derive_master_key(source: KeySource, kdf: str, iterations: int, salt: bytes) -> MasterKey:
    """Turn a key source into the master key (PBKDF2 for passphrases, HKDF for key files)."""
    if source.kind == "passphrase":
        if kdf != "pbkdf2-sha256":
            raise IntegrityError("the keystore was made with a key file, not a passphrase")
        raw = PBKDF2HMAC(
            algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, iterations=iterations
        ).derive(source.secret.reveal())
    else:
        if kdf != "keyfile":
            raise IntegrityError("the keystore was made with a passphrase, not a key file")
        raw = HKDF(
            algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=b"keyvault/master"
        ).derive(source.secret.reveal())
    return MasterKey(SecretBytes(raw))


def _header_mac(master: MasterKey, header: KeystoreHeader) -> bytes:
    return hmac.new(master.subkey("keystore-header"), header.signed_fields(), "sha256").digest()


def create_keystore(
    vault_id: str,
    source: KeySource,
    *,
    iterations: int = KDF_DEFAULT_ITERATIONS,
    rng: Random = os.urandom,
    clock: Clock = utcnow,
) -> tuple[KeystoreHeader, MasterKey]:
    """Make a new keystore header and its master key."""
    if source.kind == "passphrase" and iterations < KDF_MIN_ITERATIONS:
        raise ConfigError(
            f"kdf iterations must be at least {KDF_MIN_ITERATIONS:,} "
            f"(got {iterations:,}); the default is {KDF_DEFAULT_ITERATIONS:,}"
        )
    if source.kind == "passphrase" and iterations > KDF_MAX_ITERATIONS:
        raise ConfigError(
            f"kdf iterations must be at most {KDF_MAX_ITERATIONS:,} (got {iterations:,})"
        )
    kdf = "pbkdf2-sha256" if source.kind == "passphrase" else "keyfile"
    header = KeystoreHeader(
        vault_id=vault_id,
        kdf=kdf,
        iterations=iterations if kdf != "keyfile" else 0,
        salt=rng(16),
        created_at=clock().isoformat(),
    )
    master = derive_master_key(source, header.kdf, header.iterations, header.salt)
    signed = KeystoreHeader(**{**header.__dict__, "mac": _header_mac(master, header)})
    return signed, master


def unlock_keystore(header: KeystoreHeader, source: KeySource) -> MasterKey:
    """Derive the master key and check the header; one opaque error for every failure."""
    if header.kdf == "pbkdf2-sha256" and not (
        KDF_MIN_ITERATIONS <= header.iterations <= KDF_MAX_ITERATIONS
    ):
        # lowered: weaker than we allow; raised past the bound: an unlock that never ends
        raise IntegrityError()
    master = derive_master_key(source, header.kdf, header.iterations, header.salt)
    if not hmac.compare_digest(_header_mac(master, header), header.mac):
        raise IntegrityError(
            "the master key does not open this keystore "
            "(wrong key file or passphrase, or the keystore header was altered)"
        )
    return master


# --------------------------------------------------------------------------- envelope


@dataclass(frozen=True)
class SealedValue:
    """A value sealed for storage: its wrapped DEK and its ciphertext."""

    kek_version: int
    wrapped_dek: bytes
    ciphertext: bytes


_DekKey = tuple[int, int, bytes]  # (version, KEK version, wrapped DEK) of one secret


class Envelope:
    """Seal and open secret values for one vault under its master key and live KEKs.

    Opening a value unwraps its DEK under a KEK and builds an AES-GCM object for it; the
    object is kept in a bounded LRU (:data:`DEK_CACHE_SECRETS` secrets ×
    :data:`DEK_CACHE_VERSIONS` versions), keyed by the exact sealed row it came from (secret,
    version, KEK version, wrapped DEK), so a changed row is a miss, never a stale hit. It holds
    DEK keys only, never a plaintext value. It is emptied for a secret on every write to it
    (:meth:`forget`), for a KEK when that KEK is unloaded, and whole on a rekey.
    """

    def __init__(self, vault_id: str, master: MasterKey, *, rng: Random = os.urandom) -> None:
        self.vault_id = vault_id
        self._wrap_key = AESGCM(master.subkey("kek-wrap"))
        self._rng = rng
        self._keks: dict[int, AESGCM] = {}
        self._deks: OrderedDict[str, dict[_DekKey, AESGCM]] = OrderedDict()

    def __repr__(self) -> str:
        return f"Envelope(vault_id={self.vault_id!r}, keks={sorted(self._keks)})"

    # KEKs ------------------------------------------------------------------
    def new_kek(self, version: int) -> bytes:
        """Make KEK ``version``, load it, and return it wrapped by the master key."""
        raw = self._rng(KEY_BYTES)
        self._keks[version] = AESGCM(raw)
        return _seal(self._wrap_key, raw, _aad("kek", self.vault_id, version), self._rng)

    def load_kek(self, version: int, wrapped: bytes) -> None:
        """Unwrap a stored KEK so values under it can be opened."""
        raw = _open(self._wrap_key, wrapped, _aad("kek", self.vault_id, version))
        self._keks[version] = AESGCM(raw)

    def has_kek(self, version: int) -> bool:
        """Whether KEK ``version`` is loaded."""
        return version in self._keks

    def kek_versions(self) -> set[int]:
        """The versions of the loaded KEKs."""
        return set(self._keks)

    def unload_kek(self, version: int) -> None:
        """Forget a KEK (after it is destroyed), and every DEK it wrapped."""
        self._keks.pop(version, None)
        for sid in list(self._deks):
            kept = {k: v for k, v in self._deks[sid].items() if k[1] != version}
            if kept:
                self._deks[sid] = kept
            else:
                del self._deks[sid]

    def forget(self, secret_id: str) -> None:
        """Drop the cached DEKs of one secret (it was written, deleted or destroyed)."""
        self._deks.pop(secret_id, None)

    def cached_deks(self) -> dict[str, list[_DekKey]]:
        """What the DEK cache holds, by secret id (for tests and diagnostics; no key bytes)."""
        return {sid: list(found) for sid, found in self._deks.items()}

    def rewrap_kek_for(self, new_master: MasterKey, version: int, wrapped: bytes) -> bytes:
        """Re-wrap a stored KEK under a new master key (rekey)."""
        raw = _open(self._wrap_key, wrapped, _aad("kek", self.vault_id, version))
        return _seal(
            AESGCM(new_master.subkey("kek-wrap")),
            raw,
            _aad("kek", self.vault_id, version),
            self._rng,
        )

    def wrap_aux(self, purpose: str, raw: bytes) -> bytes:
        """Wrap an auxiliary vault key (e.g. the audit MAC key) under the master key."""
        return _seal(self._wrap_key, raw, _aad("aux", self.vault_id, purpose), self._rng)

    def unwrap_aux(self, purpose: str, wrapped: bytes) -> bytes:
        """Unwrap an auxiliary key made by :meth:`wrap_aux`."""
        return _open(self._wrap_key, wrapped, _aad("aux", self.vault_id, purpose))

    def rewrap_aux_for(self, new_master: MasterKey, purpose: str, wrapped: bytes) -> bytes:
        """Re-wrap an auxiliary key under a new master key (rekey)."""
        raw = self.unwrap_aux(purpose, wrapped)
        return _seal(
            AESGCM(new_master.subkey("kek-wrap")),
            raw,
            _aad("aux", self.vault_id, purpose),
            self._rng,
        )

    def use_master(self, master: MasterKey) -> None:
        """Switch to a new master key after a rekey (loaded KEKs stay loaded; cached DEKs go)."""
        self._wrap_key = AESGCM(master.subkey("kek-wrap"))
        self._deks.clear()

    def _kek(self, version: int) -> AESGCM:
        try:
            return self._keks[version]
        except KeyError:
            raise IntegrityError() from None

    # values ----------------------------------------------------------------
    def seal(self, secret_id: str, version: int, plaintext: bytes, kek_version: int) -> SealedValue:
        """Encrypt one secret version under a fresh DEK wrapped by KEK ``kek_version``."""
        dek = self._rng(KEY_BYTES)
        wrapped = _seal(
            self._kek(kek_version),
            dek,
            _aad("dek", self.vault_id, secret_id, version, kek_version),
            self._rng,
        )
        ciphertext = _seal(
            AESGCM(dek), plaintext, _aad("value", self.vault_id, secret_id, version), self._rng
        )
        return SealedValue(kek_version, wrapped, ciphertext)

    def _dek(self, secret_id: str, version: int, kek_version: int, wrapped: bytes) -> bytes:
        return _open(
            self._kek(kek_version),
            wrapped,
            _aad("dek", self.vault_id, secret_id, version, kek_version),
        )

    def open(self, secret_id: str, version: int, sealed: SealedValue) -> bytes:
        """Decrypt one secret version; any mismatch raises the opaque IntegrityError."""
        return _open(
            self._value_key(secret_id, version, sealed),
            sealed.ciphertext,
            _aad("value", self.vault_id, secret_id, version),
        )

    def _value_key(self, secret_id: str, version: int, sealed: SealedValue) -> AESGCM:
        """The AES-GCM object of a value's DEK: from the LRU, or unwrapped and remembered."""
        key = (version, sealed.kek_version, sealed.wrapped_dek)
        found = self._deks.get(secret_id)
        if found is not None:
            aead = found.get(key)
            if aead is not None:
                self._deks.move_to_end(secret_id)
                return aead
        aead = AESGCM(self._dek(secret_id, version, sealed.kek_version, sealed.wrapped_dek))
        if found is None:
            found = self._deks[secret_id] = {}
            if len(self._deks) > DEK_CACHE_SECRETS:
                self._deks.popitem(last=False)
        elif len(found) >= DEK_CACHE_VERSIONS:
            found.clear()
        found[key] = aead
        return aead

    def rewrap(
        self, secret_id: str, version: int, sealed: SealedValue, new_kek: int
    ) -> SealedValue:
        """Re-wrap one value's DEK under KEK ``new_kek``; the value's ciphertext is unchanged.

        The DEK is unwrapped and the value opened first, so a damaged row is found here rather
        than after the old KEK is gone. The secret's cached DEKs are dropped.
        """
        self.forget(secret_id)
        self.open(secret_id, version, sealed)
        self.forget(secret_id)
        dek = self._dek(secret_id, version, sealed.kek_version, sealed.wrapped_dek)
        wrapped = _seal(
            self._kek(new_kek),
            dek,
            _aad("dek", self.vault_id, secret_id, version, new_kek),
            self._rng,
        )
        return SealedValue(new_kek, wrapped, sealed.ciphertext)


def fingerprint(key: bytes) -> str:
    """SHA-256 fingerprint of a key, hex, for showing which key is meant without revealing it."""
    return hashlib.sha256(b"keyvault-fingerprint\x00" + key).hexdigest()
