"""Canary search: every form in which a planted secret could leak, and a search over byte blobs.

A canary leaks if any of these appears in any captured blob: the text itself, its hex (lower and
upper case), its base64 (standard and URL-safe, at each of the three byte alignments a canary can
have inside a longer encoded string, with and without padding), its URL encoding, and the same
for its first 16 bytes.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass


def _b64_forms(raw: bytes) -> set[bytes]:
    """Base64 substrings that must appear wherever ``raw`` is base64-encoded, at any alignment."""
    forms: set[bytes] = set()
    for pad in range(3):
        encoded = base64.b64encode(b"\x00" * pad + raw)
        # drop the characters that mix in the padding bytes before, and the unstable tail
        start = (pad * 4 + 2) // 3
        end = len(encoded) - 4
        if end - start >= 12:
            core = encoded[start:end]
            forms.add(core)
            forms.add(core.replace(b"+", b"-").replace(b"/", b"_"))
    forms.add(base64.b64encode(raw))
    forms.add(base64.urlsafe_b64encode(raw).rstrip(b"="))
    return forms


def forms(canary: str) -> set[bytes]:
    """Every encoded form of ``canary`` (and of its first 16 bytes) to search for."""
    raw = canary.encode("utf-8")
    out: set[bytes] = set()
    for part in (raw, raw[:16]):
        out.add(part)
        out.add(binascii.hexlify(part))
        out.add(binascii.hexlify(part).upper())
        out.add(urllib.parse.quote(part, safe="").encode("ascii"))
        out.add(urllib.parse.quote_plus(part.decode("utf-8", "replace")).encode("ascii"))
        out |= _b64_forms(part)
    return {f for f in out if len(f) >= 12}


@dataclass
class Hit:
    """One leak: which canary, in what form, found where."""

    canary: str
    form: bytes
    where: str


def search(canaries: Iterable[str], blobs: dict[str, bytes]) -> list[Hit]:
    """Every (canary, form, blob name) found; an empty list means no leak."""
    hits: list[Hit] = []
    for canary in canaries:
        for form in forms(canary):
            for where, blob in blobs.items():
                if form in blob:
                    hits.append(Hit(canary, form, where))
    return hits
