"""common.webhooks: the signature scheme and the documented verifier's refusals."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from common.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayCache,
    WebhookVerificationError,
    sign,
    verify,
)

BODY = b'{"event":"rotated","name":"db/pw","id":"sec_x","version":3}'


def test_signature_is_hmac_of_timestamp_dot_body() -> None:
    headers = sign("k3y", BODY, now=1_700_000_000)
    expected = hmac.new(b"k3y", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert headers == {TIMESTAMP_HEADER: "1700000000", SIGNATURE_HEADER: f"v1={expected}"}
    verify("k3y", headers, BODY, now=1_700_000_010)


@pytest.mark.parametrize(
    ("secret", "body", "now", "words"),
    [
        ("wrong", BODY, 1_700_000_000, "does not match"),
        ("k3y", BODY + b"x", 1_700_000_000, "does not match"),
        ("k3y", BODY, 1_700_000_301, "beyond the 300 s tolerance"),  # stale
        ("k3y", BODY, 1_699_999_600, "beyond the 300 s tolerance"),  # from the future
    ],
)
def test_refusals(secret: str, body: bytes, now: int, words: str) -> None:
    headers = sign("k3y", BODY, now=1_700_000_000)
    with pytest.raises(WebhookVerificationError, match=words):
        verify(secret, headers, body, now=now)


def test_missing_or_malformed_headers_and_replay() -> None:
    with pytest.raises(WebhookVerificationError, match="not a signed notice"):
        verify("k3y", {}, BODY)
    with pytest.raises(WebhookVerificationError, match="unix seconds"):
        verify("k3y", {TIMESTAMP_HEADER: "soon", SIGNATURE_HEADER: "v1=00"}, BODY)
    seen = ReplayCache()
    headers = sign("k3y", BODY)
    lowered = {k.lower(): v for k, v in headers.items()}
    verify("k3y", lowered, BODY, seen=seen)
    with pytest.raises(WebhookVerificationError, match="replay refused"):
        verify("k3y", headers, BODY, seen=seen)


def test_replay_cache_is_bounded() -> None:
    seen = ReplayCache(max_entries=2)
    for ts in range(5):
        assert seen.check_and_add(ts, "v1=x", 600)
    assert len(seen._seen) == 2
