"""Operator intents: what makes an agent act, sealed and authenticated on the operator's machine.

A policy (its selector, rotator and settings), its change or deletion, and a command (rotate,
resync) are made by an operator app (``apps.core``), sealed and authenticated there with keys
derived from the organisation's metadata key, stored and relayed by the control plane as they
are, and opened only by agents, which run what verifies. The wire form (contract:
``docs/intents.md``) is one JSON object::

    {"v": 1, "kind": "policy" | "policy_delete" | "command", "id": "pol_…" | "cmd_…",
     "revision": n, "issued_at": "…", "expires_at": "…" | null,
     "vault_ids": ["vlt_…"] | null,             # null: every vault of the organisation
     "interval_seconds": n | null, "notice_seconds": n | null,
     "sealed": base64url(nonce(12) || AES-256-GCM(seal key, nonce, padded body, aad = header)),
     "mac": base64url(HMAC-SHA256(auth key, "keyvault-intent-v1" 0 header 0 sealed))}

``header`` is the canonical JSON of every field but ``sealed`` and ``mac``: the control plane
reads the clear fields it needs for alerts and routing (interval, notice, target vaults) and
cannot change one without breaking the tag. The body (a policy's name, selector and rotator; a
command and its arguments) is padded to 256-byte buckets. The seal key and the auth key are
separate HKDF subkeys of the metadata key, which the control plane knows only by fingerprint.
Replay is the receiver's business: per-policy revisions only go up, a command id runs once,
and a command expires (:data:`MAX_COMMAND_TTL`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.errors import IntegrityError, ValidationError
from common.metadata_key import MetadataKey

VERSION = 1
KINDS = ("policy", "policy_delete", "command")
MAX_INTENT_CHARS = 16 * 1024  # the whole JSON text of one intent
MAX_VAULT_IDS = 1000
PAD = 256
DEFAULT_COMMAND_TTL = timedelta(hours=24)
MAX_COMMAND_TTL = timedelta(days=7)
MAX_REVISION = 2**31 - 1
HEADER_FIELDS = frozenset(
    {"v", "kind", "id", "revision", "issued_at", "expires_at", "vault_ids"}
    | {"interval_seconds", "notice_seconds"}
)
_ID = {"policy": re.compile(r"^pol_[a-z2-7]{26}$"), "command": re.compile(r"^cmd_[a-z2-7]{26}$")}
_VAULT_ID = re.compile(r"^vlt_[A-Za-z0-9]{1,36}$")
_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"  # in ASCII order: time-prefixed ids sort by time
_MAC_PREFIX = b"keyvault-intent-v1\x00"
_last_ms = 0


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical(doc: dict[str, Any]) -> bytes:
    """The one byte form of a header (sorted keys, no spaces, ASCII)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def new_id(prefix: str, moment: datetime | None = None) -> str:
    """A fresh ``pol_…``/``cmd_…`` id: 10 symbols of the time in ms (ids sort by time), then 16
    random ones (80 bits)."""
    global _last_ms
    ms = max(0, int((moment or datetime.now(UTC)).timestamp() * 1000))
    if moment is None:  # ids made here one after another sort in that order
        ms = _last_ms = max(ms, _last_ms + 1)
    head = "".join(_ALPHABET[(ms >> (5 * i)) & 31] for i in reversed(range(10)))
    return f"{prefix}_{head}" + "".join(secrets.choice(_ALPHABET) for _ in range(16))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _when(value: Any, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValidationError(f"intent {field} must be an ISO 8601 time with a zone")
    return moment


@dataclass(frozen=True)
class Header:
    """The clear, authenticated part of an intent (what the control plane may read)."""

    kind: str
    id: str
    revision: int
    issued_at: datetime
    expires_at: datetime | None
    vault_ids: tuple[str, ...] | None  # None: every vault of the organisation
    interval_seconds: int | None
    notice_seconds: int | None

    def to_json(self) -> dict[str, Any]:
        """The header's JSON (the authenticated bytes are its :func:`canonical` form)."""
        return {
            "v": VERSION,
            "kind": self.kind,
            "id": self.id,
            "revision": self.revision,
            "issued_at": _iso(self.issued_at),
            "expires_at": _iso(self.expires_at) if self.expires_at else None,
            "vault_ids": list(self.vault_ids) if self.vault_ids is not None else None,
            "interval_seconds": self.interval_seconds,
            "notice_seconds": self.notice_seconds,
        }

    def meant_for(self, vault_id: str | None) -> bool:
        """Whether the intent targets this vault."""
        return self.vault_ids is None or (vault_id is not None and vault_id in self.vault_ids)


@dataclass(frozen=True)
class Intent:
    """An intent that verified: its header, its opened body and its tag (its identity)."""

    header: Header
    body: dict[str, Any]
    mac: str


def _int(value: Any, field: str, low: int, high: int, *, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"intent {field} must be a whole number from {low} to {high}")
    return value


def _vault_ids(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_VAULT_IDS
        or not all(isinstance(v, str) and _VAULT_ID.match(v) for v in value)
        or value != sorted(set(value))
    ):
        raise ValidationError(
            f"intent vault_ids must be null or 1-{MAX_VAULT_IDS} distinct vault ids, sorted"
        )
    return tuple(value)


def parse_header(doc: Any) -> Header:
    """The clear header of an intent, checked for shape only (no key needed: the control plane
    uses this); ValidationError saying what is wrong."""
    if not isinstance(doc, dict) or set(doc) != HEADER_FIELDS | {"sealed", "mac"}:
        raise ValidationError(
            "an intent is an object with exactly "
            + ", ".join(sorted(HEADER_FIELDS | {"sealed", "mac"}))
        )
    if doc["v"] != VERSION or doc["kind"] not in KINDS:
        raise ValidationError(f"intent v must be {VERSION} and kind one of {', '.join(KINDS)}")
    kind = doc["kind"]
    pattern = _ID["command" if kind == "command" else "policy"]
    if not isinstance(doc["id"], str) or not pattern.match(doc["id"]):
        raise ValidationError(f"intent id must look like {pattern.pattern}")
    policy = kind == "policy"
    interval = _int(doc["interval_seconds"], "interval_seconds", 60, 10 * 365 * 86400,
                    optional=not policy)  # fmt: skip
    notice = _int(doc["notice_seconds"], "notice_seconds", 0, 365 * 86400, optional=not policy)
    if not policy and (interval is not None or notice is not None):
        raise ValidationError("only a policy intent carries interval_seconds and notice_seconds")
    expires = None if doc["expires_at"] is None else _when(doc["expires_at"], "expires_at")
    if (kind == "command") != (expires is not None):
        raise ValidationError("a command intent, and only a command intent, has expires_at")
    header = Header(
        kind=kind,
        id=doc["id"],
        revision=_int(doc["revision"], "revision", 1, MAX_REVISION, optional=False) or 1,
        issued_at=_when(doc["issued_at"], "issued_at"),
        expires_at=expires,
        vault_ids=_vault_ids(doc["vault_ids"]),
        interval_seconds=interval,
        notice_seconds=notice,
    )
    if kind == "command" and (header.vault_ids is None or len(header.vault_ids) != 1):
        raise ValidationError("a command intent targets exactly one vault")
    if not isinstance(doc["sealed"], str) or not isinstance(doc["mac"], str):
        raise ValidationError("intent sealed and mac must be strings")
    return header


def check_size(doc: Any) -> None:
    """ValidationError when an intent's JSON text is larger than :data:`MAX_INTENT_CHARS`."""
    if len(json.dumps(doc, separators=(",", ":"))) > MAX_INTENT_CHARS:
        raise ValidationError(f"an intent is at most {MAX_INTENT_CHARS} characters of JSON")


class IntentKeys:
    """The sealing and authentication subkeys of one organisation's metadata key."""

    __slots__ = ("_auth", "_seal")

    def __init__(self, key: MetadataKey) -> None:
        self._seal = AESGCM(key.subkey(b"intent-seal-v1"))
        self._auth = key.subkey(b"intent-auth-v1")

    def _tag(self, header: bytes, sealed: str) -> str:
        msg = _MAC_PREFIX + header + b"\x00" + sealed.encode("ascii")
        return _b64e(hmac.new(self._auth, msg, hashlib.sha256).digest())

    def seal(self, header: Header, body: dict[str, Any]) -> dict[str, Any]:
        """The wire form of an intent with this header and body."""
        head = header.to_json()
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % PAD)  # JSON ignores trailing spaces: lengths show buckets
        nonce = os.urandom(12)
        sealed = _b64e(nonce + self._seal.encrypt(nonce, raw, canonical(head)))
        doc = {**head, "sealed": sealed, "mac": self._tag(canonical(head), sealed)}
        check_size(doc)
        return doc

    def open(self, doc: Any) -> Intent:
        """The verified intent, or IntegrityError (forged, altered, or another key's) /
        ValidationError (malformed)."""
        check_size(doc)
        header = parse_header(doc)
        head = canonical(header.to_json())
        if head != canonical({k: doc[k] for k in HEADER_FIELDS}):
            raise IntegrityError("the intent's header is not in its canonical form")
        if not hmac.compare_digest(self._tag(head, doc["sealed"]), doc["mac"]):
            raise IntegrityError("the intent's authentication tag does not verify")
        try:
            raw = _b64d(doc["sealed"])
            body = json.loads(self._seal.decrypt(raw[:12], raw[12:], head))
        except (InvalidTag, ValueError, binascii.Error):
            raise IntegrityError("the intent's sealed body does not open") from None
        if not isinstance(body, dict):
            raise IntegrityError("the intent's sealed body is not an object")
        return Intent(header, body, doc["mac"])


def policy_header(
    policy_id: str,
    revision: int,
    *,
    interval_seconds: int,
    notice_seconds: int,
    vault_ids: list[str] | None,
    now: datetime | None = None,
) -> Header:
    """The header of a policy intent (create or change)."""
    return Header("policy", policy_id, revision, now or datetime.now(UTC), None,
                  tuple(sorted(set(vault_ids))) if vault_ids is not None else None,
                  interval_seconds, notice_seconds)  # fmt: skip


def delete_header(policy_id: str, revision: int, *, now: datetime | None = None) -> Header:
    """The header of a policy deletion (a revision above the last one)."""
    return Header("policy_delete", policy_id, revision, now or datetime.now(UTC), None, None,
                  None, None)  # fmt: skip


def command_header(
    vault_id: str, *, ttl: timedelta = DEFAULT_COMMAND_TTL, now: datetime | None = None
) -> Header:
    """The header of a new command to one vault (a fresh id, expiring after ``ttl``)."""
    if not timedelta(seconds=60) <= ttl <= MAX_COMMAND_TTL:
        raise ValidationError("a command lives from 60 seconds to 7 days")
    moment = now or datetime.now(UTC)
    return Header("command", new_id("cmd", now), 1, moment, moment + ttl, (vault_id,),
                  None, None)  # fmt: skip
