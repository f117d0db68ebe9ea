"""``keyvault agent enroll`` against a fake gateway: the pin is checked before any secret leaves,
files land atomically with ``state.json`` last, a lost answer is retried with the same CSR, and
every failure is one clear line with its exit code."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from agent.uplink.enroll import enroll, parse_token
from agent.uplink.errors import AlreadyEnrolledError, EnrollmentRefusedError, PinMismatchError
from agent.uplink.state import UplinkFiles, same_key
from common.errors import UnavailableError, ValidationError
from common.pki import CertificateAuthority
from common.uplink import BOOTSTRAP_PATH, REGISTER_PATH
from tests.agent.fake_gateway import FakeGateway
from tests.conftest import AgentDir, init_agent_dir

CLI = [sys.executable, "-m", "apps.cli.main"]


@pytest.fixture
def folder(tmp_path: Path) -> AgentDir:
    return init_agent_dir(tmp_path / "agent")


def _cli(folder: AgentDir, url: str, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "agent", "enroll", "--data-dir", str(folder.path), "--control-plane", url,
         "--token", token, *extra],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_enrollment_stores_an_identity_that_fits_and_state_json_last(
    folder: AgentDir, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    real_write = UplinkFiles._write

    def spy(self: UplinkFiles, name: str, data: bytes, *, private: bool = False) -> None:
        written.append(name)
        real_write(self, name, data, private=private)

    monkeypatch.setattr(UplinkFiles, "_write", spy)
    result = enroll(folder.path, gateway.url, gateway.token(), name="billing-db")
    up = folder.path / "uplink"
    state = json.loads((up / "state.json").read_text())
    assert state["vault_id"] == result.vault_id and state["name"] == "billing-db"
    assert state["control_plane_url"] == gateway.url
    assert state["pin"] == gateway.service_ca.pin()
    assert set(state) == {"vault_id", "control_plane_url", "pin", "enrolled_at", "name"}
    assert (up / "service-ca.pem").read_bytes() == gateway.service_ca.cert_pem()
    chain = x509.load_pem_x509_certificates((up / "client.crt").read_bytes())
    assert [c.subject for c in chain] == [chain[0].subject, gateway.org_ca.cert.subject]
    assert chain[0].subject.rfc4514_string() == f"CN={result.vault_id}"
    assert same_key(chain[0], (up / "client.key").read_bytes())
    assert stat.S_IMODE((up / "client.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(up.stat().st_mode) == 0o700
    assert not (up / "pending.json").exists() and not (up / "pending.key").exists()
    assert not list(up.glob(".*.tmp"))
    # each file went through an atomic write, state.json last
    assert written[-4:] == ["service-ca.pem", "client.key", "client.crt", "state.json"]
    # the CSR sent is the key made here; the private key never left
    register = [r for r in gateway.requests if r.path == REGISTER_PATH]
    assert len(register) == 1
    key_text = (up / "client.key").read_bytes()
    assert all(key_text.strip() not in r.body for r in gateway.requests)


def test_a_wrong_pin_aborts_before_any_token_byte_leaves(
    folder: AgentDir, gateway: FakeGateway
) -> None:
    token = gateway.token(pin_of=CertificateAuthority.create("Another control plane"))
    with pytest.raises(PinMismatchError) as caught:
        enroll(folder.path, gateway.url, token)
    assert "not the one this token was made for (CA pin mismatch)" in caught.value.message
    assert gateway.url in caught.value.message
    assert caught.value.exit_code == 77
    assert [r.path for r in gateway.requests] == [BOOTSTRAP_PATH]
    secret = token.split(".")[0]
    for r in gateway.requests:
        blob = r.path.encode() + r.headers.encode() + r.body
        assert secret.encode() not in blob and secret[4:20].encode() not in blob
    assert not (folder.path / "uplink" / "state.json").exists()
    assert not (folder.path / "uplink" / "pending.json").exists()


def test_a_used_token_is_refused_with_a_clear_message(
    tmp_path: Path, folder: AgentDir, gateway: FakeGateway
) -> None:
    token = gateway.token()
    enroll(folder.path, gateway.url, token)
    other = init_agent_dir(tmp_path / "other")
    with pytest.raises(EnrollmentRefusedError) as caught:
        enroll(other.path, gateway.url, token)
    assert "refused the token" in caught.value.message
    assert "ask for a new one" in caught.value.message
    assert caught.value.exit_code == 77
    assert not (other.path / "uplink" / "state.json").exists()


def test_a_lost_answer_is_retried_with_the_same_csr(folder: AgentDir, gateway: FakeGateway) -> None:
    gateway.drop_register_answers = 1
    result = enroll(folder.path, gateway.url, gateway.token())
    bodies = [json.loads(r.body) for r in gateway.requests if r.path == REGISTER_PATH]
    assert len(bodies) == 2 and bodies[0]["csr"] == bodies[1]["csr"]
    assert json.loads((folder.path / "uplink" / "state.json").read_text())["vault_id"] == (
        result.vault_id
    )


def test_a_lost_answer_is_retried_with_the_same_csr_by_the_next_run(
    folder: AgentDir, gateway: FakeGateway
) -> None:
    token = gateway.token()
    gateway.drop_register_answers = 3  # every attempt of the first run loses its answer
    with pytest.raises(UnavailableError):
        enroll(folder.path, gateway.url, token)
    assert (folder.path / "uplink" / "pending.key").exists()
    assert not (folder.path / "uplink" / "state.json").exists()
    enroll(folder.path, gateway.url, token)
    csrs = {json.loads(r.body)["csr"] for r in gateway.requests if r.path == REGISTER_PATH}
    assert len(csrs) == 1
    assert not (folder.path / "uplink" / "pending.key").exists()


def test_an_enrolled_folder_needs_force(folder: AgentDir, gateway: FakeGateway) -> None:
    first = enroll(folder.path, gateway.url, gateway.token())
    with pytest.raises(AlreadyEnrolledError) as caught:
        enroll(folder.path, gateway.url, gateway.token())
    assert first.vault_id in caught.value.message and "--force" in caught.value.message
    second = enroll(folder.path, gateway.url, gateway.token(), force=True)
    assert second.vault_id != first.vault_id
    assert UplinkFiles(folder.path / "uplink").load_state().vault_id == second.vault_id  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "bad",
    ["", "kve_short.abc", "kvt_" + "a" * 30 + "." + "0" * 64, "kve_" + "a" * 30 + "." + "G" * 64],
)
def test_a_malformed_token_is_refused_before_any_request(bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_token(bad)
    assert "kve_<secret>.<64 hex digits>" in caught.value.message


def test_the_token_never_shows_in_repr() -> None:
    token = parse_token("kve_" + "s" * 30 + "." + "a" * 64)
    assert "s" * 30 not in repr(token)


def test_cli_errors_are_one_line_with_exit_codes(
    tmp_path: Path, folder: AgentDir, gateway: FakeGateway
) -> None:
    bad = _cli(folder, gateway.url, "kve_nope")
    assert bad.returncode == 64 and bad.stderr.count("\n") == 1 and "malformed" in bad.stderr

    wrong = _cli(folder, gateway.url, gateway.token(pin_of=CertificateAuthority.create("x")))
    assert wrong.returncode == 77, wrong.stderr
    assert "CA pin mismatch" in wrong.stderr and wrong.stderr.count("\n") == 1

    gone = _cli(folder, "https://127.0.0.1:1", gateway.token())
    assert gone.returncode == 69 and "cannot reach the control plane" in gone.stderr
    assert gone.stderr.count("\n") == 1

    plain = _cli(folder, "http://127.0.0.1:1", gateway.token())
    assert plain.returncode == 64 and "https://" in plain.stderr

    token = gateway.token()
    ok = _cli(folder, gateway.url, token, "--name", "cli-vault")
    assert ok.returncode == 0, ok.stderr
    assert "enrolled as vault vlt_" in ok.stdout and "cli-vault" in ok.stdout
    assert token not in ok.stdout + ok.stderr

    used = _cli(init_agent_dir(tmp_path / "b"), gateway.url, token)
    assert used.returncode == 77 and "refused the token" in used.stderr

    again = _cli(folder, gateway.url, gateway.token())
    assert again.returncode == 65 and "already enrolled" in again.stderr
