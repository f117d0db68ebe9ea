"""The operator CLI (login, org metadata-key, vaults) against a real control plane and a real
Secret Service; the command and inventory commands against fleet_stub.py."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from apps.cli.main import cli
from apps.core.keyring_store import CredentialStore
from apps.core.session import Profile, profile_path, save_profile
from common import errors as e
from common import intents
from common.cpclient import ControlPlaneClient
from common.metadata_key import MetadataKey
from tests.apps.conftest import OWNER, PASSWORD, LiveControlPlane, LiveServer
from tests.apps.fleet_stub import TOKEN, FleetStub


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Invoke ``keyvault ARGS`` in-process."""
    return CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=False)


def one_error_line(result: Result, code: int, *fragments: str) -> str:
    """Check an error: its exit code and exactly one ``error:`` line on stderr."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def login(live: LiveControlPlane, email: str = OWNER) -> Result:
    result = run("login", "--control-plane", live.url, "--email", email, input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- help


@pytest.mark.parametrize(
    "command",
    [
        "login",
        "logout",
        "whoami",
        "org",
        "org metadata-key",
        "org metadata-key create",
        "org metadata-key export",
        "org metadata-key import",
        "org metadata-key show",
        "vaults",
        "vaults list",
        "vaults show",
        "vaults revoke",
        "vaults enroll-token",
        "vaults inventory",
        "vaults rotate",
        "vaults resync",
        "vaults commands",
        "vaults command",
    ],
)
def test_every_command_has_help(command: str) -> None:
    result = run(*command.split(), "--help")
    assert result.exit_code == 0 and "Usage:" in result.stdout


# ---------------------------------------------------------------- login / whoami / logout


def test_login_whoami_logout(keyring_env: dict[str, str], live_cp: LiveControlPlane) -> None:
    result = login(live_cp)
    assert f"logged in to {live_cp.url} as {OWNER} (owner, Acme)" in result.stdout
    token = CredentialStore().get_session_token(live_cp.url, OWNER)
    assert token and token.startswith("kvs_")
    assert token not in result.output and PASSWORD not in result.output

    path = profile_path()
    assert path.parent == Path(keyring_env["XDG_CONFIG_HOME"]) / "keyvault"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    profile = json.loads(path.read_text())
    assert profile["control_plane_url"] == live_cp.url and profile["org_id"] == live_cp.org_id
    assert "kvs_" not in path.read_text()

    who = run("whoami")
    assert who.exit_code == 0, who.output
    assert f"{OWNER} (owner)" in who.stdout and live_cp.org_id in who.stdout
    assert "not in this keyring (none registered)" in who.stdout

    # again, with the password from the environment and URL/e-mail from the profile:
    # the new token replaces the old one, which is revoked
    again = run("login", env={"KEYVAULT_PASSWORD": PASSWORD})
    assert again.exit_code == 0, again.output
    new = CredentialStore().get_session_token(live_cp.url, OWNER)
    assert new and new != token
    with ControlPlaneClient(live_cp.url, token) as cp, pytest.raises(e.AuthenticationError):
        cp.me()

    out = run("logout")
    assert out.exit_code == 0 and f"logged out of {live_cp.url}" in out.stdout
    assert CredentialStore().get_session_token(live_cp.url, OWNER) is None
    with ControlPlaneClient(live_cp.url, new) as cp, pytest.raises(e.AuthenticationError):
        cp.me()
    one_error_line(run("whoami"), 77, "no session for", "keyvault login --control-plane")
    assert run("logout").stdout.strip() == "not logged in"


def test_an_expired_session_says_how_to_log_in(
    keyring_env: dict[str, str], live_cp: LiveControlPlane
) -> None:
    login(live_cp)
    token = CredentialStore().get_session_token(live_cp.url, OWNER)
    with ControlPlaneClient(live_cp.url, token) as cp:
        cp.logout()  # revoked elsewhere
    one_error_line(
        run("whoami"),
        77,
        "has expired or was revoked",
        f"keyvault login --control-plane {live_cp.url} --email {OWNER}",
    )


def test_login_errors_are_one_line(keyring_env: dict[str, str], live_cp: LiveControlPlane) -> None:
    wrong = run("login", "--control-plane", live_cp.url, "--email", OWNER, input="nope\n")
    one_error_line(wrong, 77, "wrong e-mail address or password")
    assert not profile_path().exists()
    assert CredentialStore().get_session_token(live_cp.url, OWNER) is None

    url = f"http://127.0.0.1:{_free_port()}"
    down = run("login", "--control-plane", url, "--email", OWNER, input=PASSWORD + "\n")
    one_error_line(down, 69, f"cannot reach the control plane at {url}")

    bad = run("login", "--control-plane", "cp.example.com", "--email", OWNER, input="x\n")
    one_error_line(bad, 64, "must start with https://")
    one_error_line(run("login"), 64, "--control-plane")
    one_error_line(run("whoami"), 77, "not logged in", "keyvault login")


def test_login_without_a_keyring_fails_before_asking_for_the_password(
    no_keyring: None, live_cp: LiveControlPlane
) -> None:
    result = run("login", "--control-plane", live_cp.url, "--email", OWNER, input=PASSWORD + "\n")
    one_error_line(result, 78, "no OS keyring", "gnome-keyring", "PYTHON_KEYRING_BACKEND")
    assert "Password" not in result.output


# ---------------------------------------------------------------- metadata key


def _assert_key_never_shown(result: Result, key: MetadataKey) -> None:
    secret_part = key.to_text().split(":", 1)[1]
    assert secret_part not in result.output
    assert secret_part[:16] not in result.output


def _registered(live: LiveControlPlane) -> str | None:
    with ControlPlaneClient(live.url, live.token()) as cp:
        return cp.me()["org"]["metadata_key_fingerprint"]  # type: ignore[no-any-return]


def test_metadata_key_create_show_export_replace(
    keyring_env: dict[str, str], live_cp: LiveControlPlane, tmp_path: Path
) -> None:
    login(live_cp)
    first = tmp_path / "first.key"
    created = run("org", "metadata-key", "create", "--out", str(first))
    assert created.exit_code == 0, created.output
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    key = MetadataKey.load(first)
    _assert_key_never_shown(created, key)
    assert key.fingerprint in created.stdout
    assert _registered(live_cp) == key.fingerprint
    stored = CredentialStore().get_metadata_key(live_cp.org_id)
    assert stored is not None and stored.fingerprint == key.fingerprint

    shown = run("org", "metadata-key", "show")
    assert shown.exit_code == 0
    assert shown.stdout.count(key.fingerprint) == 2 and "match:         yes" in shown.stdout
    _assert_key_never_shown(shown, key)
    assert "matches the control plane" in run("whoami").stdout

    exported = tmp_path / "exported.key"
    result = run("org", "metadata-key", "export", "--out", str(exported))
    assert result.exit_code == 0, result.output
    _assert_key_never_shown(result, key)
    assert exported.read_text() == first.read_text()
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    one_error_line(
        run("org", "metadata-key", "export", "--out", str(exported)), 64, "already exists"
    )

    # a second key needs --replace
    second = tmp_path / "second.key"
    refused = run("org", "metadata-key", "create", "--out", str(second))
    one_error_line(refused, 65, "already has a metadata key", "--replace", "refused")
    assert not second.exists() and _registered(live_cp) == key.fingerprint
    # an existing --out is refused before anything changes
    one_error_line(
        run("org", "metadata-key", "create", "--replace", "--out", str(first)), 64, "already exists"
    )
    assert _registered(live_cp) == key.fingerprint

    replaced = run("org", "metadata-key", "create", "--replace", "--out", str(second))
    assert replaced.exit_code == 0, replaced.output
    new = MetadataKey.load(second)
    assert new.fingerprint != key.fingerprint
    assert _registered(live_cp) == new.fingerprint
    stored = CredentialStore().get_metadata_key(live_cp.org_id)
    assert stored is not None and stored.fingerprint == new.fingerprint
    assert "refused" in replaced.stderr
    _assert_key_never_shown(replaced, new)

    # import on a computer whose keyring lacks the key: only the registered key is accepted
    CredentialStore().delete_metadata_key(live_cp.org_id)
    assert "no key in this keyring" in run("org", "metadata-key", "show").stdout
    one_error_line(run("org", "metadata-key", "import", str(first)), 65, "registered")
    imported = run("org", "metadata-key", "import", str(second))
    assert imported.exit_code == 0, imported.output
    assert CredentialStore().get_metadata_key(live_cp.org_id) is not None


def test_metadata_key_needs_the_owner(
    keyring_env: dict[str, str], live_cp: LiveControlPlane, tmp_path: Path
) -> None:
    login(live_cp, live_cp.member("admin@example.com", "admin"))
    out = tmp_path / "k.key"
    one_error_line(
        run("org", "metadata-key", "create", "--out", str(out)), 77, "only an owner", "admin"
    )
    assert not out.exists()
    assert CredentialStore().get_metadata_key(live_cp.org_id) is None
    one_error_line(
        run("org", "metadata-key", "export", "--out", str(out)), 66, "holds no metadata key"
    )


# ---------------------------------------------------------------- vaults


def test_vaults_and_enrollment(keyring_env: dict[str, str], live_cp: LiveControlPlane) -> None:
    login(live_cp)
    assert "no vaults yet" in run("vaults", "list").stdout

    made = run("vaults", "enroll-token", "--description", "web tier", "--ttl", "600")
    assert made.exit_code == 0, made.output
    token = next(w for w in made.stdout.split() if w.startswith("kve_"))
    # the control plane says where its gateway is: a command that works as shown, no placeholder
    from control_plane.gateway.app import GATEWAY

    real = live_cp.server.app[GATEWAY].url
    assert f"keyvault agent enroll --control-plane {real} --token {token}" in made.stdout
    assert "placeholder" not in made.stderr and "<control-plane-host>" not in made.stdout

    gateway = "https://cp.example.com:8444"
    made = run("vaults", "enroll-token", "--gateway-url", gateway)
    token = next(w for w in made.stdout.split() if w.startswith("kve_"))
    assert f"keyvault agent enroll --control-plane {gateway} --token {token}" in made.stdout
    remembered = run("vaults", "enroll-token")
    assert f"--control-plane {gateway} --token kve_" in remembered.stdout
    with ControlPlaneClient(live_cp.url, live_cp.token()) as cp:
        tokens = cp.list_enrollment_tokens()["items"]
    assert len(tokens) == 3 and {t["description"] for t in tokens} >= {"web tier"}

    vault_id = live_cp.enroll_vault("web-1")
    listed = run("vaults", "list")
    assert listed.exit_code == 0
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "STATUS", "AGENT", "LAST", "HEARTBEAT"]
    assert row.split()[:2] == [vault_id, "web-1"]
    assert [v["id"] for v in json.loads(run("vaults", "list", "--json").stdout)] == [vault_id]

    shown = run("vaults", "show", vault_id)
    assert shown.exit_code == 0 and f"id:                    {vault_id}" in shown.stdout
    one_error_line(run("vaults", "show", "vlt_nope"), 66)

    kept = run("vaults", "revoke", vault_id, input="n\n")
    assert kept.exit_code == 1
    # irreversible: a "y" is not enough, the vault's name must be typed
    kept = run("vaults", "revoke", vault_id, input="y\n")
    assert kept.exit_code == 1 and "Type 'web-1' to confirm" in kept.stdout
    assert json.loads(run("vaults", "show", vault_id, "--json").stdout)["revoked_at"] is None
    revoked = run("vaults", "revoke", "web-1", input="web-1\n")
    assert revoked.exit_code == 0 and f"vault {vault_id} (web-1) revoked" in revoked.stdout
    assert json.loads(run("vaults", "show", vault_id, "--json").stdout)["status"] == "revoked"


def test_a_viewer_cannot_make_enrollment_tokens(
    keyring_env: dict[str, str], live_cp: LiveControlPlane
) -> None:
    login(live_cp, live_cp.member("viewer@example.com", "viewer"))
    one_error_line(run("vaults", "enroll-token"), 77, "admin")


# ---------------------------------------------------------------- inventory and commands (stub)


@pytest.fixture
def stub_session(keyring_env: dict[str, str]) -> Iterator[tuple[FleetStub, Any]]:
    """A logged-in profile whose control plane is the stub."""
    state = FleetStub()
    server = LiveServer(state.app())
    try:
        save_profile(Profile(server.url, OWNER, org_id="org_stub", org_name="Stub", role="owner"))
        CredentialStore().set_session_token(server.url, OWNER, TOKEN)
        yield state, server
    finally:
        server.stop()


def test_inventory_names_with_and_without_the_key(stub_session: tuple[FleetStub, Any]) -> None:
    state, _ = stub_session
    key = MetadataKey.generate()
    state.add_secrets(["db/password", "api/token"], key)
    state.add_secrets(["moved"], MetadataKey.generate())  # sealed with some other key
    state.add_secrets([None])  # an agent without a metadata key

    blind = run("vaults", "inventory", state.vault_id)
    assert blind.exit_code == 0, blind.output
    assert "db/password" not in blind.stdout and "sec_0000 *" in blind.stdout
    assert "no metadata key in this keyring" in blind.stderr
    assert "metadata-key import" in blind.stderr

    CredentialStore().set_metadata_key("org_stub", key)
    seen = run("vaults", "inventory", state.vault_id)
    assert seen.exit_code == 0, seen.output
    rows = seen.stdout.splitlines()
    assert rows[0].split()[:3] == ["SECRET", "VERSION", "ROTATION"]
    assert rows[1].startswith("db/password") and rows[2].startswith("api/token")
    assert rows[3].startswith("sec_0002 *") and rows[4].startswith("sec_0003 *")
    assert "does not open with this metadata key" in seen.stderr
    assert "agent sends no label" in seen.stderr

    doc = json.loads(run("vaults", "inventory", state.vault_id, "--json").stdout)
    assert [d["name"] for d in doc] == ["db/password", "api/token", None, None]
    assert doc[2]["label_state"] == "unreadable"
    one_error_line(run("vaults", "inventory", "vlt_other"), 66, "no vault vlt_other")


def _opened(body: dict[str, Any], key: MetadataKey) -> dict[str, Any]:
    """The sealed command a body carries, opened (the control plane cannot)."""
    return intents.IntentKeys(key).open(body["intent"]).body


def test_rotate_and_resync(stub_session: tuple[FleetStub, Any]) -> None:
    state, _ = stub_session
    no_key = run("vaults", "rotate", state.vault_id, "sec_0001")
    one_error_line(no_key, 78, "metadata-key import")  # agents run only what the key seals
    key = MetadataKey.generate()
    CredentialStore().set_metadata_key("org_stub", key)
    sent = run("vaults", "rotate", state.vault_id, "sec_0001")
    assert sent.exit_code == 0, sent.output
    assert sent.stdout.strip() == "command cmd_1 (rotate sec_0001) is pending"
    assert set(state.seen_bodies[-1]) == {"intent"}
    assert _opened(state.seen_bodies[-1], key) == {"command": "rotate",
                                                   "args": {"secret_id": "sec_0001"}}  # fmt: skip

    waited = run("vaults", "rotate", state.vault_id, "sec_0001", "--wait")
    assert waited.exit_code == 0, waited.output
    assert "command cmd_2 succeeded: rotated to version 2" in waited.stdout

    resync = run("vaults", "resync", state.vault_id, "--wait", "--timeout", "10")
    assert resync.exit_code == 0 and "cmd_3 succeeded" in resync.stdout
    assert _opened(state.seen_bodies[-1], key) == {"command": "resync", "args": {}}

    listed = run("vaults", "commands", state.vault_id)
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == [
        "cmd_1",
        "cmd_2",
        "cmd_3",
    ]
    assert "on vlt_stub: succeeded" in run("vaults", "command", "cmd_2").stdout

    state.outcome = "failed"
    failed = run("vaults", "rotate", state.vault_id, "sec_0009", "--wait")
    one_error_line(failed, 1, "command cmd_4 (rotate sec_0009) failed: the rotator refused")

    state.polls_until_done = 10**6
    slow = run("vaults", "resync", state.vault_id, "--wait", "--timeout", "1")
    one_error_line(slow, 75, "still sent after 1 s", "keyvault vaults command cmd_5")


def test_no_keyring_for_vault_commands(no_keyring: None, tmp_path: Path) -> None:
    save_profile(Profile("http://127.0.0.1:9", OWNER, org_id="org_x"))
    one_error_line(run("vaults", "list"), 78, "no OS keyring")
    assert os.environ["DBUS_SESSION_BUS_ADDRESS"].endswith("no-such-bus")


def test_the_printed_enroll_line_enrolls_a_real_agent(
    keyring_env: dict[str, str],
    live_cp: LiveControlPlane,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """End to end: the one line `vaults enroll-token` prints, run as it is next to the key
    file, enrolls an agent under its name and installs the organisation's metadata key."""
    import shlex

    from control_plane.gateway.app import GATEWAY
    from tests.conftest import init_agent_dir

    monkeypatch.chdir(tmp_path)
    login(live_cp)
    assert run("org", "metadata-key", "create").exit_code == 0  # keyvault-metadata.key here
    gateway = live_cp.server.app[GATEWAY].url
    made = run("vaults", "enroll-token", "--gateway-url", gateway, "--name", "db-1")
    assert made.exit_code == 0, made.output
    # standard output is the one command and nothing else (`> enroll.sh` keeps it)
    (line,) = made.stdout.splitlines()
    argv = shlex.split(line)
    assert argv[:5] == ["keyvault", "agent", "enroll", "--control-plane", gateway]
    assert argv[-4:] == ["--name", "db-1", "--metadata-key-file", "keyvault-metadata.key"]
    assert "single use" in made.stderr
    agent = init_agent_dir(tmp_path / "agent")
    enrolled = run(*argv[1:], "--data-dir", str(agent.path))
    assert enrolled.exit_code == 0, enrolled.output
    installed = agent.path / "metadata.key"
    assert (
        MetadataKey.load(installed).fingerprint
        == MetadataKey.load(tmp_path / "keyvault-metadata.key").fingerprint
    )
    assert installed.stat().st_mode & 0o777 == 0o600
    listed = run("vaults", "list", "--json")
    assert [v["name"] for v in json.loads(listed.stdout)] == ["db-1"]


def test_a_damaged_profile_is_named_and_login_rewrites_it(
    keyring_env: dict[str, str], live_cp: LiveControlPlane
) -> None:
    path = profile_path()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    one_error_line(run("whoami"), 78, str(path), "log in again")
    login(live_cp)
    assert run("whoami").exit_code == 0
