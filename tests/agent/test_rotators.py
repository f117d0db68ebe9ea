"""Rotators against the real world: PostgreSQL roles, external commands, the random generator.

PostgreSQL tests use the server at ``KEYVAULT_TEST_PG`` (127.0.0.1:5432) with throwaway roles.
Proving that an *old* password no longer logs in needs a server that checks passwords; when
the shared server trusts every local login, a private cluster (``initdb --auth=scram-sha-256``
from the same installation, see ``tests/pgscram.py``) is started for the module. The shared
server is still exercised directly: its stored SCRAM verifiers are checked against the new and
old passwords.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from agent.rotation import RotationError, SecretRef, build_rotator
from agent.rotation.rotators import REASONS
from agent.settings import AgentSettings, RotationSettings
from common.settings import load_settings
from tests.conftest import PG_ADMIN_URL, need_service
from tests.pgscram import PgServer, free_port, private_server, scram_matches

SECRET = SecretRef(id="sec_0123456789", name="prod/db/app", version=4)
LOOKALIKES = set("0O1lI|")
SYMBOLS = set("!#$%&()*+,-./:;<=>?@[]^_{|}~")


def _no_value(values: list[str], *texts: str) -> None:
    for text in texts:
        for value in values:
            assert value not in text


# ---------------------------------------------------------------- PostgreSQL servers


@pytest.fixture(scope="module")
def shared_pg() -> Iterator[PgServer]:
    """The shared PostgreSQL server (fails under CI when unreachable)."""
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        need_service("PostgreSQL", exc)
    server = PgServer(PG_ADMIN_URL, checks_passwords=False)
    role = server.create_role("right-password")
    server.checks_passwords = not server.can_login(role, "wrong-password")
    try:
        yield server
    finally:
        server.drop_roles()


@pytest.fixture(scope="module")
def pg(shared_pg: PgServer) -> Iterator[PgServer]:
    """A server that checks passwords: the shared one when it does, else a private cluster."""
    if shared_pg.checks_passwords:
        yield shared_pg
        return
    with private_server() as server:
        yield server


def pg_settings(tmp_path: Path, dsn: str, **extra: Any) -> RotationSettings:
    """Rotation settings with one connection ``main`` whose DSN file holds ``dsn``."""
    dsn_file = tmp_path / "main.dsn"
    dsn_file.write_text(dsn + "\n")
    dsn_file.chmod(0o600)
    return RotationSettings.model_validate({"postgres": {"main": {"dsn_file": dsn_file, **extra}}})


def pg_rotator(settings: RotationSettings, role: str, alternate: str | None = None) -> Any:
    """A postgres rotator for ``role`` (alternating with ``alternate`` when given), the roles
    listed in the connection's ``roles`` as agent.yaml must list them."""
    params: dict[str, Any] = {"connection": "main", "role": role}
    if alternate:
        params["alternate_role"] = alternate
    settings.postgres["main"].roles = [r for r in (role, alternate) if r]
    return build_rotator({"type": "postgres", "settings": params}, settings, SECRET)


# ---------------------------------------------------------------- postgres rotator


def test_postgres_rotation_new_password_logs_in_old_does_not(pg: PgServer, tmp_path: Path) -> None:
    old = "o'ld\"pass word"
    role = pg.create_role(old)
    assert pg.can_login(role, old)
    rotator = pg_rotator(pg_settings(tmp_path, pg.admin_dsn), role)
    new = rotator.generate(old)
    assert len(new) == 32 and new != old
    rotator.apply(new, old)
    rotator.verify(new)
    assert pg.can_login(role, new)
    assert not pg.can_login(role, old)
    assert scram_matches(pg.verifier(role), new)
    _no_value([new, old], repr(rotator), str(rotator.__dict__))


def test_postgres_revert_restores_the_old_password(pg: PgServer, tmp_path: Path) -> None:
    old = "the-old-one"
    role = pg.create_role(old)
    rotator = pg_rotator(pg_settings(tmp_path, pg.admin_dsn), role)
    new = rotator.generate(old)
    rotator.apply(new, old)
    rotator.revert(old, new)
    assert pg.can_login(role, old)
    assert not pg.can_login(role, new)


def test_postgres_verify_with_a_wrong_password_fails(pg: PgServer, tmp_path: Path) -> None:
    role = pg.create_role("current-pw")
    rotator = pg_rotator(pg_settings(tmp_path, pg.admin_dsn), role)
    with pytest.raises(RotationError) as caught:
        rotator.verify("not-the-password")
    assert caught.value.reason == "verification_failed"
    _no_value(["not-the-password", "current-pw"], str(caught.value), repr(caught.value))


def test_postgres_admin_with_a_wrong_password_is_authentication_failed(
    pg: PgServer, tmp_path: Path
) -> None:
    role = pg.create_role("keep-me")
    params = conninfo_to_dict(pg.admin_dsn)
    params["password"] = "admin-wrong-pw"
    rotator = pg_rotator(pg_settings(tmp_path, make_conninfo(**params)), role)
    new = rotator.generate("keep-me")
    with pytest.raises(RotationError) as caught:
        rotator.apply(new, "keep-me")
    assert caught.value.reason == "authentication_failed"
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    _no_value([new, "keep-me", "admin-wrong-pw"], str(caught.value), repr(caught.value))
    assert pg.can_login(role, "keep-me")


def test_postgres_database_down_is_unreachable_and_old_password_works(
    pg: PgServer, tmp_path: Path
) -> None:
    role = pg.create_role("still-valid")
    params = conninfo_to_dict(pg.admin_dsn)
    params["port"] = str(free_port())  # nothing listens there
    rotator = pg_rotator(pg_settings(tmp_path, make_conninfo(**params)), role)
    new = rotator.generate("still-valid")
    for step in (lambda: rotator.apply(new, "still-valid"), lambda: rotator.verify(new)):
        with pytest.raises(RotationError) as caught:
            step()
        assert caught.value.reason == "database_unreachable"
        _no_value([new, "still-valid"], str(caught.value), repr(caught.value))
    assert pg.can_login(role, "still-valid")
    assert not pg.can_login(role, new)


def test_postgres_alternating_users_never_break_the_live_login(
    pg: PgServer, tmp_path: Path
) -> None:
    first, second = pg.create_role("a-pw-0"), pg.create_role("b-pw-0")
    rotator = pg_rotator(pg_settings(tmp_path, pg.admin_dsn), first, second)
    live = [json.dumps({"username": first, "password": "a-pw-0"})]
    stop = threading.Event()
    results: list[bool] = []

    def keep_logging_in() -> None:
        while not stop.is_set():
            doc = json.loads(live[0])
            results.append(pg.can_login(doc["username"], doc["password"]))

    worker = threading.Thread(target=keep_logging_in, daemon=True)
    worker.start()
    try:
        users = []
        for _ in range(5):
            current = live[0]
            new = rotator.generate(current)
            doc = json.loads(new)
            assert doc["username"] != json.loads(current)["username"]  # the idle role
            rotator.apply(new, current)
            rotator.verify(new)
            live[0] = new  # promote
            users.append(doc["username"])
            time.sleep(0.3)  # the previous value's grace period, shortened
    finally:
        stop.set()
        worker.join(10)
    assert users == [second, first, second, first, second]
    assert len(results) >= 5
    assert all(results), f"{results.count(False)} of {len(results)} logins failed"
    final = json.loads(live[0])
    assert pg.can_login(final["username"], final["password"])


def test_postgres_alternating_revert_leaves_the_live_role_alone(
    pg: PgServer, tmp_path: Path
) -> None:
    first, second = pg.create_role("a-live"), pg.create_role("b-idle")
    rotator = pg_rotator(pg_settings(tmp_path, pg.admin_dsn), first, second)
    current = json.dumps({"username": first, "password": "a-live"})
    new = rotator.generate(current)
    rotator.apply(new, current)
    rotator.revert(current, new)
    assert pg.can_login(first, "a-live")


def test_postgres_bad_value_and_missing_role(pg: PgServer, tmp_path: Path) -> None:
    settings = pg_settings(tmp_path, pg.admin_dsn)
    first, second = pg.create_role("x"), pg.create_role("y")
    alternating = pg_rotator(settings, first, second)
    for value in ("plain-password", json.dumps({"username": "someone", "password": "p"})):
        with pytest.raises(RotationError) as caught:
            alternating.generate(value)
        assert caught.value.reason == "invalid_settings"
        _no_value(["plain-password"], str(caught.value))
    missing = pg_rotator(settings, f"kv_rot_missing_{uuid.uuid4().hex[:8]}")
    with pytest.raises(RotationError) as caught:
        missing.apply("whatever-pw", None)
    assert caught.value.reason == "invalid_settings"


def test_postgres_unreadable_dsn_file_and_unknown_connection(tmp_path: Path) -> None:
    settings = RotationSettings.model_validate(
        {"postgres": {"main": {"dsn_file": tmp_path / "absent.dsn"}}}
    )
    rotator = pg_rotator(settings, "app")
    with pytest.raises(RotationError) as caught:
        rotator.apply("new-pw-123", "old")
    assert caught.value.reason == "connection_not_configured"
    with pytest.raises(RotationError) as caught:
        build_rotator(
            {"type": "postgres", "settings": {"connection": "other", "role": "app"}},
            settings,
            SECRET,
        )
    assert caught.value.reason == "connection_not_configured"


def test_postgres_on_the_shared_server_changes_the_stored_verifier(
    shared_pg: PgServer, tmp_path: Path
) -> None:
    old = "shared-old-pw"
    role = shared_pg.create_role(old)
    rotator = pg_rotator(pg_settings(tmp_path, shared_pg.admin_dsn), role)
    new = rotator.generate(old)
    rotator.apply(new, old)
    with pytest.raises(RotationError) as caught:  # trust auth: a login proves nothing
        rotator.verify(new)
    assert caught.value.reason == "verification_failed"
    assert scram_matches(shared_pg.verifier(role), new)
    assert not scram_matches(shared_pg.verifier(role), old)
    rotator.revert(old, new)
    assert scram_matches(shared_pg.verifier(role), old)


def test_postgres_verify_uses_configured_host_port_dbname(pg: PgServer, tmp_path: Path) -> None:
    role = pg.create_role("v-pw")
    params = conninfo_to_dict(pg.admin_dsn)
    settings = pg_settings(
        tmp_path, pg.admin_dsn, host="127.0.0.1", port=free_port(), dbname="postgres"
    )
    with pytest.raises(RotationError) as caught:
        pg_rotator(settings, role).verify("v-pw")
    assert caught.value.reason == "database_unreachable"
    settings = pg_settings(tmp_path, pg.admin_dsn, port=int(params["port"]))
    pg_rotator(settings, role).verify("v-pw")


# ---------------------------------------------------------------- command rotator


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def _command(argv: list[str], timeout: float = 30, **params: Any) -> Any:
    settings = RotationSettings.model_validate(
        {"commands": {"hook": {"argv": argv, "timeout_seconds": timeout}}}
    )
    return build_rotator(
        {"type": "command", "settings": {"command": "hook", **params}}, settings, SECRET
    )


def test_command_gets_the_value_on_stdin_and_a_scrubbed_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("KEYVAULT_MASTER_PASSPHRASE", "do-not-leak")
    monkeypatch.setenv("LANG", "C.UTF-8")
    out = tmp_path / "out"
    script = _script(
        tmp_path,
        "hook.sh",
        f'cat > {out}/value\nenv > {out}/env\necho "$0 $*" > {out}/argv\necho "$(cat {out}/value)" >&2\n',
    )
    out.mkdir()
    rotator = _command([str(script), "--flag"], length=40, classes="luds")
    caplog.set_level(logging.DEBUG)
    new = rotator.generate("old-value")
    assert len(new) == 40
    rotator.apply(new, "old-value")
    rotator.verify(new)
    assert (out / "value").read_text() == new
    env = dict(line.split("=", 1) for line in (out / "env").read_text().splitlines() if "=" in line)
    env.pop("PWD", None)  # the shell sets these itself
    env.pop("SHLVL", None)
    env.pop("_", None)
    assert env == {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "KEYVAULT_SECRET_ID": SECRET.id,
        "KEYVAULT_SECRET_VERSION": str(SECRET.version + 1),
    }
    assert new not in (out / "argv").read_text()
    assert "41 bytes of stderr" in caplog.text
    _no_value([new, "old-value"], caplog.text, repr(rotator))


def test_command_revert_runs_it_again_with_the_current_value(tmp_path: Path) -> None:
    out = tmp_path / "value"
    script = _script(
        tmp_path, "hook.sh", f'cat > {out}\necho "$KEYVAULT_SECRET_VERSION" >> {out}\n'
    )
    rotator = _command([str(script)])
    rotator.revert("the-current", "the-new")
    assert out.read_text() == f"the-current{SECRET.version}\n"
    rotator.revert(None, "the-new")  # no current value: nothing to run
    assert out.read_text() == f"the-current{SECRET.version}\n"


def test_command_non_zero_exit_is_command_failed_and_stderr_is_withheld(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = _script(tmp_path, "fail.sh", 'v=$(cat); echo "rejected $v" >&2; exit 3\n')
    rotator = _command([str(script)])
    new = rotator.generate(None)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RotationError) as caught:
        rotator.apply(new, None)
    assert caught.value.reason == "command_failed"
    assert "3" in str(caught.value)
    _no_value([new], str(caught.value), repr(caught.value), caplog.text)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = _script(
        tmp_path, "slow.sh", f"echo $$ > {pids}\nsleep 60 &\necho $! >> {pids}\nwait\n"
    )
    rotator = _command([str(script)], timeout=1)
    started = time.monotonic()
    with pytest.raises(RotationError) as caught:
        rotator.apply("a-value-xyz", None)
    assert caught.value.reason == "command_timeout"
    assert time.monotonic() - started < 10
    shell, sleeper = (int(p) for p in pids.read_text().split())
    deadline = time.monotonic() + 5
    while (_alive(shell) or _alive(sleeper)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(shell) and not _alive(sleeper)
    _no_value(["a-value-xyz"], str(caught.value), repr(caught.value))


def test_command_that_does_not_read_stdin_still_succeeds(tmp_path: Path) -> None:
    rotator = _command([str(_script(tmp_path, "ok.sh", "exit 0\n"))], bytes=512, encoding="hex")
    value = rotator.generate(None)
    rotator.apply(value * 200, None)  # larger than a pipe buffer, never read


def test_command_missing_program_or_name(tmp_path: Path) -> None:
    rotator = _command([str(tmp_path / "nope.sh")])
    with pytest.raises(RotationError) as caught:
        rotator.apply("v-123456", None)
    assert caught.value.reason == "command_not_configured"
    with pytest.raises(RotationError) as caught:
        build_rotator(
            {"type": "command", "settings": {"command": "other"}}, RotationSettings(), SECRET
        )
    assert caught.value.reason == "command_not_configured"


# ---------------------------------------------------------------- random rotator


def _random(**params: Any) -> Any:
    return build_rotator({"type": "random", "settings": params}, RotationSettings(), SECRET)


def test_random_defaults() -> None:
    rotator = _random()
    values = {rotator.generate(None) for _ in range(50)}
    assert len(values) == 50
    for value in values:
        assert len(value) == 32
        assert any(c.islower() for c in value) and any(c.isupper() for c in value)
        assert any(c.isdigit() for c in value)
        assert not set(value) & (LOOKALIKES | SYMBOLS)
    rotator.apply("x", None)
    rotator.verify("x")
    rotator.revert(None, "x")


@pytest.mark.parametrize(
    ("params", "check"),
    [
        ({"length": 8, "classes": "d", "min_per_class": 8}, str.isdigit),
        ({"length": 1024, "classes": "s"}, lambda v: set(v) <= SYMBOLS - LOOKALIKES),
        ({"length": 12, "classes": "lu", "min_per_class": 0}, str.isalpha),
    ],
)
def test_random_length_and_classes(params: dict[str, Any], check: Any) -> None:
    value = _random(**params).generate(None)
    assert len(value) == params["length"]
    assert check(value)


def test_random_min_per_class() -> None:
    rotator = _random(length=20, classes="luds", min_per_class=5)
    for _ in range(50):
        value = rotator.generate(None)
        assert sum(c.islower() for c in value) == 5
        assert sum(c.isupper() for c in value) == 5
        assert sum(c.isdigit() for c in value) == 5
        assert sum(c in SYMBOLS for c in value) == 5


def test_random_lookalikes_only_when_allowed() -> None:
    allowed = "".join(_random(length=1024, classes="luds", exclude_lookalikes=False).generate(None))
    assert set(allowed) & LOOKALIKES
    excluded = _random(length=1024, classes="luds").generate(None)
    assert not set(excluded) & LOOKALIKES


def test_random_bytes_encodings() -> None:
    assert len(base64.b64decode(_random(encoding="base64", bytes=16).generate(None))) == 16
    assert len(base64.b64decode(_random(bytes=48).generate(None))) == 48
    hexed = _random(encoding="hex", bytes=512).generate(None)
    assert len(bytes.fromhex(hexed)) == 512


@pytest.mark.parametrize(
    "params",
    [
        {"length": 7},
        {"length": 1025},
        {"length": "32"},
        {"length": True},
        {"classes": ""},
        {"classes": "x"},
        {"classes": "ll"},
        {"classes": ["l"]},
        {"length": 8, "classes": "luds", "min_per_class": 3},
        {"min_per_class": -1},
        {"exclude_lookalikes": "yes"},
        {"encoding": "base32"},
        {"encoding": "hex", "bytes": 15},
        {"bytes": 513},
        {"bytes": 32, "length": 32},
        {"alphabet": "abc"},
    ],
)
def test_random_invalid_settings(params: dict[str, Any]) -> None:
    with pytest.raises(RotationError) as caught:
        _random(**params)
    assert caught.value.reason == "invalid_settings"


@pytest.mark.parametrize(
    "rotator",
    [
        None,
        {"type": "ldap", "settings": {}},
        {"type": "random", "settings": ["length"]},
        {"type": "postgres", "settings": {"role": "app"}},
        {"type": "command", "settings": {}},
    ],
)
def test_build_rotator_rejects_malformed_blocks(rotator: Any) -> None:
    with pytest.raises(RotationError) as caught:
        build_rotator(rotator, RotationSettings(), SECRET)
    assert caught.value.reason == "invalid_settings"


def test_rotation_error_is_a_fixed_code() -> None:
    assert "invalid_settings" in REASONS and "not_allowed" in REASONS and len(REASONS) == 11
    assert RotationError("made-up").reason == "internal_error"
    assert repr(RotationError("command_failed", "exit status 2")).startswith("RotationError(")


# ---------------------------------------------------------------- settings


def test_rotation_settings_defaults_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = AgentSettings().rotation
    assert defaults.jitter_fraction == 0.1
    assert (defaults.scan_interval_seconds, defaults.retry_base_seconds) == (60, 60)
    monkeypatch.setenv("KEYVAULT_ROTATION__JITTER_FRACTION", "0.25")
    monkeypatch.setenv(
        "KEYVAULT_ROTATION__COMMANDS", json.dumps({"reload-app": {"argv": ["/bin/true"]}})
    )
    monkeypatch.setenv(
        "KEYVAULT_ROTATION__POSTGRES", json.dumps({"main": {"dsn_file": str(tmp_path / "d")}})
    )
    settings = load_settings(AgentSettings)
    assert settings.rotation.jitter_fraction == 0.25
    assert settings.rotation.commands["reload-app"].timeout_seconds == 30
    assert settings.rotation.postgres["main"].dsn_file == tmp_path / "d"


@pytest.mark.parametrize(
    "doc",
    [
        {"commands": {"Bad": {"argv": ["/bin/true"]}}},
        {"commands": {"x" * 41: {"argv": ["/bin/true"]}}},
        {"commands": {"ok": {"argv": ["true"]}}},
        {"commands": {"ok": {"argv": []}}},
        {"commands": {"ok": {"argv": ["/bin/true"], "timeout_seconds": 601}}},
        {"postgres": {"1db": {"dsn_file": "/x"}}},
        {"postgres": {"db": {"dsn": "postgresql://u:p@h/db"}}},
        {"jitter_fraction": 2},
    ],
)
def test_rotation_settings_rejects_bad_values(doc: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RotationSettings.model_validate(doc)


def test_postgres_roles_not_listed_in_agent_yaml_are_refused(tmp_path: Path) -> None:
    """The control plane cannot widen what agent.yaml allows: role and alternate_role."""
    settings = pg_settings(tmp_path, "host=127.0.0.1 port=1", roles=["app"])
    for params in ({"role": "postgres"}, {"role": "app", "alternate_role": "postgres"}):
        with pytest.raises(RotationError) as caught:
            build_rotator({"type": "postgres", "settings": {"connection": "main", **params}},
                          settings, SECRET)  # fmt: skip
        assert caught.value.reason == "not_allowed"
    build_rotator({"type": "postgres", "settings": {"connection": "main", "role": "app"}},
                  settings, SECRET)  # fmt: skip
