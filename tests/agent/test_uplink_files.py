"""The uplink's files: state.json parsing, the pending CSR, and renewal swaps that survive a crash
at any point between their renames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.uplink.state import (
    CLIENT_CRT,
    CLIENT_KEY,
    RENEW_CRT,
    RENEW_KEY,
    Enrollment,
    UplinkFiles,
)
from common.errors import ConfigError
from common.pki import CertificateAuthority, make_csr


@pytest.fixture
def files(tmp_path: Path) -> UplinkFiles:
    f = UplinkFiles(tmp_path / "uplink")
    f.ensure()
    return f


def _identity(ca: CertificateAuthority) -> tuple[bytes, bytes]:
    csr, key = make_csr("x")
    return ca.sign_csr(csr, common_name="vlt_abc") + ca.cert_pem(), key


def test_state_round_trip_and_a_garbled_file(files: UplinkFiles) -> None:
    assert files.load_state() is None
    state = Enrollment("vlt_abc", "https://cp:8444", "sha256:" + "0" * 64, "now", "n")
    ca = CertificateAuthority.create("org")
    chain, key = _identity(ca)
    files.write_enrollment(ca.cert_pem(), key, chain, state)
    assert files.load_state() == state
    assert files.certificate().common_name == "vlt_abc"
    files.path("state.json").write_text("{not json")
    with pytest.raises(ConfigError, match="enroll again"):
        files.load_state()
    files.path("state.json").write_text(json.dumps({**state.to_json(), "vault_id": "bad id!"}))
    with pytest.raises(ConfigError, match="invalid vault id"):
        files.load_state()


def test_a_pending_csr_is_kept_per_token_and_url(files: UplinkFiles) -> None:
    csr, key = make_csr("x")
    files.save_pending("kve_token", "https://a", csr, key)
    assert files.pending("kve_token", "https://a") == (csr, key)
    assert files.pending("kve_other", "https://a") is None
    assert files.pending("kve_token", "https://b") is None
    assert b"kve_token" not in files.path("pending.json").read_bytes()
    files.clear_pending()
    assert files.pending("kve_token", "https://a") is None


@pytest.mark.parametrize("crash_after", ["renew_crt_written", "key_renamed"])
def test_an_interrupted_renewal_is_finished_on_the_next_read(
    files: UplinkFiles, crash_after: str
) -> None:
    ca = CertificateAuthority.create("org")
    old_chain, old_key = _identity(ca)
    files.path(CLIENT_CRT).write_bytes(old_chain)
    files.path(CLIENT_KEY).write_bytes(old_key)
    new_chain, new_key = _identity(ca)
    files.save_renewal_key(new_key)
    files.path(RENEW_CRT).write_bytes(new_chain)  # commit_renewal's first step
    if crash_after == "key_renamed":
        files.path(RENEW_KEY).replace(files.path(CLIENT_KEY))
    files.certificate()  # any reader finishes the swap first
    assert files.path(CLIENT_KEY).read_bytes() == new_key
    assert files.path(CLIENT_CRT).read_bytes() == new_chain
    assert not files.path(RENEW_KEY).exists() and not files.path(RENEW_CRT).exists()


def test_a_renewal_without_its_certificate_leaves_the_identity_alone(files: UplinkFiles) -> None:
    ca = CertificateAuthority.create("org")
    chain, key = _identity(ca)
    files.path(CLIENT_CRT).write_bytes(chain)
    files.path(CLIENT_KEY).write_bytes(key)
    files.save_renewal_key(make_csr("y")[1])
    files.certificate()
    assert files.path(CLIENT_KEY).read_bytes() == key
    files.discard_renewal()
    assert files.renewal_key() is None
