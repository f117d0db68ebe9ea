"""The audit log's on-disk format: constants, the keyed MAC, and parsing of entries and head."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

from agent import platform

LOG_NAME = "audit.log"
HEAD_NAME = "audit.head"
HEAD_SIZE = 256  # bytes in the head record, its newline included
HEAD_VERSION = 1
MAX_LINE = 16 * 1024  # longest entry, newline included; a torn tail is shorter than one entry
# Entries the head may trail the log by: inside an event loop the head is rewritten once per
# loop turn, not per entry (and at once when it trails by this many), so a process killed
# in between leaves the log up to this many entries ahead of its head.
MAX_HEAD_LAG = 64
MIN_KEY_BYTES = 16
MAX_PROBLEMS = 20  # problems a report lists; the rest are counted

_TORN_RETRIES = 5  # verify re-reads a partial last line this often (a live writer may finish it)
_RETRY_PAUSE = 0.002
_SCAN_CHUNK = 64 * 1024
_MAC_RE = re.compile(r"[0-9a-f]{64}")
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False).encode


# --------------------------------------------------------------------------- format


class _Bad(Exception):
    """A line or head record that is not what the agent writes (the text says why)."""


class _BadMac(_Bad):
    """A record that parses but whose MAC does not match."""


_IPAD = bytes(b ^ 0x36 for b in range(256))  # HMAC's pads as byte translation tables
_OPAD = bytes(b ^ 0x5C for b in range(256))


class _Mac:
    """HMAC-SHA256 under one key with the key schedule done once (the append hot path).

    RFC 2104 over ``hashlib``'s SHA-256, as CPython's own ``hmac`` module does without
    OpenSSL's HMAC: the padded key's inner and outer hashes are kept and copied per message,
    all in C, which takes about a third off ``hmac.HMAC.copy`` and its Python wrapper. The
    tests check it against ``hmac.new`` byte for byte.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:  # SHA-256's block size: a longer key is hashed first
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def hex(self, message: bytes) -> str:
        """The hex MAC of ``message``."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def __repr__(self) -> str:
        return "_Mac(**redacted**)"


def _is_mac(value: object) -> bool:
    return isinstance(value, str) and _MAC_RE.fullmatch(value) is not None


def _json(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _head_record(mac: _Mac, seq: int, entry_mac: str) -> bytes:
    """The fixed-length head record for entry ``seq``."""
    tag = mac.hex(f"head\n{seq}\n{entry_mac}".encode("ascii"))
    text = f'{{"hmac":"{tag}","mac":"{entry_mac}","seq":{seq},"v":{HEAD_VERSION}}}'
    return text.ljust(HEAD_SIZE - 1).encode("ascii") + b"\n"


def _parse_head(raw: bytes, mac: _Mac) -> tuple[int, str]:
    """``(seq, mac)`` from a head record; raises :class:`_Bad` or :class:`_BadMac`."""
    if len(raw) != HEAD_SIZE or not raw.endswith(b"\n"):
        raise _Bad(f"it is {len(raw)} bytes long, not {HEAD_SIZE}")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _Bad("it is not valid JSON") from exc
    if not isinstance(doc, dict) or doc.get("v") != HEAD_VERSION:
        raise _Bad("it is not a head record")
    seq, entry_mac = doc.get("seq"), doc.get("mac")
    if type(seq) is not int or seq < 0 or not isinstance(entry_mac, str):
        raise _Bad("it is not a head record")
    if not (entry_mac == "" if seq == 0 else _is_mac(entry_mac)) or not _is_mac(doc.get("hmac")):
        raise _Bad("it is not a head record")
    if not hmac.compare_digest(mac.hex(f"head\n{seq}\n{entry_mac}".encode("ascii")), doc["hmac"]):
        raise _BadMac("its MAC does not match")
    return seq, entry_mac


def _parse_entry(raw: bytes) -> dict[str, Any]:
    """A line (without newline) as an entry with well-formed seq, prev and mac; else _Bad."""
    try:
        entry = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _Bad("it is not valid JSON") from exc
    if not isinstance(entry, dict):
        raise _Bad("it is not a JSON object")
    seq, prev = entry.get("seq"), entry.get("prev")
    if type(seq) is not int or seq < 1 or not _is_mac(entry.get("mac")):
        raise _Bad("it is not an audit entry (its seq or mac is missing or malformed)")
    if not (prev == "" or _is_mac(prev)):
        raise _Bad("it is not an audit entry (its prev is malformed)")
    return entry


def _entry_ok(mac: _Mac, entry: dict[str, Any], raw: bytes) -> bool:
    """Whether the line is exactly the one the agent wrote for this entry.

    The agent writes the canonical body with ``"mac"`` added last, so the MAC is checked over
    the line's own bytes, minus that suffix: no re-encoding, and every byte is covered (a
    reformatted but equivalent line fails too).
    """
    suffix = f',"mac":"{entry["mac"]}"}}'.encode("ascii")
    if not raw.endswith(suffix):
        return False
    body = raw[: -len(suffix)] + b"}"
    expected = mac.hex(entry["prev"].encode("ascii") + b"\n" + body)
    return hmac.compare_digest(expected, entry["mac"])


def _tail(fd: int, size: int) -> tuple[bytes | None, int]:
    """The last complete line (without newline) and the offset just past it.

    Reads at most two lines' worth from the end of the file, never the whole log. Raises
    :class:`_Bad` when that stretch is not the end of a log (no line ends where one must).
    """
    start = max(0, size - 2 * MAX_LINE)
    buf = platform.pread(fd, size - start, start)
    nl = buf.rfind(b"\n")
    if nl < 0:
        if start > 0:
            raise _Bad(f"its last {size - start:,} bytes hold no line end")
        return None, 0
    end = start + nl + 1
    if size - end >= MAX_LINE:
        raise _Bad(f"its last {size - end:,} bytes are longer than any entry")
    prev_nl = buf.rfind(b"\n", 0, nl)
    if prev_nl < 0 and start > 0:
        raise _Bad("its last line is longer than any entry")
    return buf[prev_nl + 1 : nl], end
