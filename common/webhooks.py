"""Signed webhook notices: how KeyVault signs a POST and how a receiver checks it.

Every webhook KeyVault sends (an agent's change notices, the control plane's alerts) carries

- ``X-KeyVault-Timestamp: <unix seconds>``
- ``X-KeyVault-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>``

A receiver calls :func:`verify` with its copy of the secret, the request's headers and its raw
body: it refuses a wrong signature, a timestamp outside the tolerance (stale or from the
future) and a (timestamp, signature) pair it has already accepted (a replay), remembered by a
:class:`ReplayCache` for as long as the tolerance makes a pair acceptable.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Mapping

from common.errors import AuthenticationError

TIMESTAMP_HEADER = "X-KeyVault-Timestamp"
SIGNATURE_HEADER = "X-KeyVault-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


class WebhookVerificationError(AuthenticationError):
    """A webhook notice that must not be trusted (the message says why)."""

    code = "webhook_refused"


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The ``v1=<hex>`` signature of ``body`` sent at ``timestamp``."""
    mac = hmac.new(_key(secret), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def sign(secret: str | bytes, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The two headers that sign ``body`` now."""
    ts = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature(secret, ts, body)}


class ReplayCache:
    """The (timestamp, signature) pairs already accepted, kept while they could be replayed.

    Bounded: at most ``max_entries`` pairs (the oldest go first); thread-safe.
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self._seen: dict[tuple[int, str], float] = {}
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def check_and_add(self, ts: int, sig: str, keep_s: float) -> bool:
        """Record the pair; False when it was already there (a replay)."""
        now = self._clock()
        with self._lock:
            for old in [k for k, until in self._seen.items() if until < now]:
                del self._seen[old]
            if (ts, sig) in self._seen:
                return False
            while len(self._seen) >= self._max:
                del self._seen[next(iter(self._seen))]
            self._seen[(ts, sig)] = now + keep_s
            return True


def verify(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    seen: ReplayCache | None = None,
    now: float | None = None,
) -> None:
    """Check a notice; raise :class:`WebhookVerificationError` saying why it is refused.

    ``headers`` is any mapping of the request's headers (aiohttp's or httpx's multi-dicts, or a
    plain dict), looked up case-insensitively; of several signature values (comma-separated or
    repeated headers) one ``v1=`` must match. Pass the same ``seen`` cache to every call so a
    replay is refused.
    """
    values: dict[str, list[str]] = {}
    for key, value in headers.items():  # a multi-dict may repeat a header: keep every value
        values.setdefault(key.lower(), []).append(value)
    stamps = values.get(TIMESTAMP_HEADER.lower(), [])
    raw_ts = stamps[0] if len(stamps) == 1 else None
    sigs = values.get(SIGNATURE_HEADER.lower())
    if raw_ts is None or not sigs:
        raise WebhookVerificationError(
            f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header: not a signed notice"
        )
    if not raw_ts.isdigit() or len(raw_ts) > 12:
        raise WebhookVerificationError(f"{TIMESTAMP_HEADER} must be unix seconds")
    ts = int(raw_ts)
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise WebhookVerificationError(
            f"notice timestamp is {int(current - ts)} s from now, beyond the {int(tolerance_s)} s "
            "tolerance (stale, or a clock is wrong)"
        )
    candidates = [s.strip() for sig in sigs for s in sig.split(",")]
    expected = signature(secret, ts, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise WebhookVerificationError("signature does not match the body and secret")
    if seen is not None and not seen.check_and_add(ts, expected, 2 * tolerance_s):
        raise WebhookVerificationError("this notice was already received (replay refused)")
