"""The organisation's metadata key: seals secret names, descriptions and labels for the control plane.

The key is made on the customer side (``keyvault org metadata-key create``), kept in the
operator's OS keyring and given to agents as a file. The control plane only ever holds its
fingerprint, and sees names only as *sealed labels*::

    label = "kvl1." + base64url(nonce(12) || AES-256-GCM(key, nonce, json, aad))
    aad   = "keyvault-label\\x00" + vault_id + "\\x00" + secret_id

so a label copied to another secret or vault does not open. ``json`` is padded with spaces
(which JSON allows after a value) to a size bucket — 32, 64, 128, … 4096 bytes, then the most
a label holds — so a label shows its bucket, not the length of the name inside; labels sealed before
padding (no spaces) open the same way. The key file is one line,
``kvmk1:<base64url of 32 bytes>``, mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from common.errors import ConfigError, IntegrityError, ValidationError

KEY_PREFIX = "kvmk1:"
LABEL_PREFIX = "kvl1."
KEY_BYTES = 32
MAX_LABEL_CHARS = 8192
BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # plaintext sizes a label is padded to
_NONCE, _TAG = 12, 16
# the longest plaintext whose label still fits in MAX_LABEL_CHARS
MAX_PLAIN = (MAX_LABEL_CHARS - len("kvl1.")) * 3 // 4 - _NONCE - _TAG


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def padded_size(size: int) -> int:
    """The bucket a plaintext of ``size`` bytes is padded to: the smallest of ``BUCKETS`` that
    holds it, else the largest plaintext a label can hold (``MAX_PLAIN``); a plaintext larger
    than that is left as it is (its label is refused as too long anyway)."""
    for bucket in (*BUCKETS, MAX_PLAIN):
        if size <= bucket:
            return bucket
    return size


def _aad(vault_id: str, secret_id: str) -> bytes:
    return b"keyvault-label\x00" + vault_id.encode() + b"\x00" + secret_id.encode()


class MetadataKey:
    """A 32-byte AES-256-GCM key that seals and opens labels; never shown in ``repr``."""

    __slots__ = ("_aead", "_key", "_rng")

    def __init__(self, key: bytes, *, rng: Callable[[int], bytes] = os.urandom) -> None:
        if len(key) != KEY_BYTES:
            raise ValidationError(f"a metadata key is {KEY_BYTES} bytes, not {len(key)}")
        self._key = bytes(key)
        self._aead = AESGCM(self._key)
        self._rng = rng

    @classmethod
    def generate(cls) -> MetadataKey:
        """A new random key."""
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_text(cls, text: str) -> MetadataKey:
        """Parse ``kvmk1:<base64url>`` (the key file's and the keyring's form)."""
        text = text.strip()
        if not text.startswith(KEY_PREFIX):
            raise ValidationError(f"a metadata key starts with {KEY_PREFIX}")
        try:
            raw = _b64d(text[len(KEY_PREFIX) :])
        except (binascii.Error, ValueError):
            raise ValidationError("the metadata key is not valid base64url") from None
        return cls(raw)

    @classmethod
    def load(cls, path: Path) -> MetadataKey:
        """Read a key file, or raise ConfigError saying what is wrong with it."""
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError:
            raise ConfigError(
                f"metadata key file {path} does not exist; export it with "
                "`keyvault org metadata-key export --out FILE` and copy it here"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"metadata key file {path} cannot be read: {exc}") from None
        try:
            return cls.from_text(text)
        except ValidationError as exc:
            raise ConfigError(f"metadata key file {path}: {exc.message}") from None

    def to_text(self) -> str:
        """The key as ``kvmk1:<base64url>`` (for the key file and the keyring)."""
        return KEY_PREFIX + _b64e(self._key)

    def save(self, path: Path) -> Path:
        """Write the key file with mode 0600, refusing to overwrite an existing file."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ValidationError(f"{path} already exists; choose another --out") from None
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(self.to_text() + "\n")
        return path

    @property
    def fingerprint(self) -> str:
        """``sha256:<hex>`` — what the control plane stores instead of the key."""
        return "sha256:" + hashlib.sha256(b"keyvault-metadata-key\x00" + self._key).hexdigest()

    def subkey(self, purpose: bytes) -> bytes:
        """32 bytes derived for one ``purpose`` (HKDF-SHA256), never the key itself.

        Used by :mod:`common.intents` for its sealing and authentication keys.
        """
        info = b"keyvault-metadata-key-subkey\x00" + purpose
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(self._key)

    def seal(self, vault_id: str, secret_id: str, fields: dict[str, Any]) -> str:
        """Seal ``fields`` (name, description, labels) for one secret of one vault, padded to
        its size bucket."""
        nonce = self._rng(_NONCE)
        plain = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")
        plain = plain.ljust(padded_size(len(plain)), b" ")
        return LABEL_PREFIX + _b64e(
            nonce + self._aead.encrypt(nonce, plain, _aad(vault_id, secret_id))
        )

    def open(self, vault_id: str, secret_id: str, label: str) -> dict[str, Any]:
        """The fields of a sealed label, or IntegrityError if it is not ours or was moved."""
        try:
            if not label.startswith(LABEL_PREFIX) or len(label) > MAX_LABEL_CHARS:
                raise ValueError
            raw = _b64d(label[len(LABEL_PREFIX) :])
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _aad(vault_id, secret_id))
            doc = json.loads(plain)  # the padding is trailing whitespace
            if not isinstance(doc, dict):
                raise ValueError
            return doc
        except (InvalidTag, ValueError, binascii.Error):
            raise IntegrityError("the sealed label does not open with this metadata key") from None

    def __repr__(self) -> str:
        return f"MetadataKey(fingerprint={self.fingerprint!r})"
