"""The ``keyvault`` command as a user runs it: real subprocesses against a running agent.

Each call is ``python -m apps.cli.main …`` with the connection given the way a user gives it
(``KEYVAULT_DATA_DIR`` and ``KEYVAULT_TOKEN_FILE``). Calls that do not depend on each other run
side by side to keep the suite fast. Only the ``--help`` walk runs in-process (CliRunner).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from agent.crypto import KeySource
from agent.keys import KeyManager
from agent.secrets import SecretService
from agent.store.db import Store
from apps.cli.main import cli
from common.errors import IntegrityError
from tests.conftest import AgentDir, AgentProcess, init_agent_dir, start_agent

ROOT = Path(__file__).resolve().parents[2]
EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_DENIED, EXIT_CONFIG = 66, 69, 77, 78


@dataclass
class Done:
    """A finished ``keyvault`` call."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def ok(self) -> Done:
        """Assert success and return self."""
        assert self.code == 0, (
            f"keyvault {' '.join(self.args)} -> {self.code}\n{self.out}{self.err}"
        )
        return self

    def one_line_error(self, code: int) -> str:
        """Assert exit ``code`` with exactly one ``error: …`` line on stderr; return it."""
        assert self.code == code, (self.args, self.code, self.out, self.err)
        lines = self.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), self.err
        assert "Traceback" not in self.err + self.out
        return lines[0]


@dataclass
class Call:
    """One ``keyvault`` command line, with optional standard input and extra environment."""

    args: tuple[str, ...]
    stdin: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def call(*args: str, stdin: str | None = None, **env: str) -> Call:
    """A :class:`Call` written like the command line."""
    return Call(args, stdin, env)


@dataclass
class User:
    """A shell user pointed at one agent through the environment."""

    agent: AgentProcess
    token_file: Path

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("KEYVAULT_", "VAULT_"))}
        base.update(
            KEYVAULT_DATA_DIR=str(self.agent.dir.path), KEYVAULT_TOKEN_FILE=str(self.token_file)
        )
        base.update(extra)
        return {k: v for k, v in base.items() if v != ""}  # "" unsets a variable

    def start(self, call: Call) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "apps.cli.main", *call.args],
            cwd=self.token_file.parent,
            stdin=subprocess.PIPE if call.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(**call.env),
        )

    def __call__(self, *args: str, stdin: str | None = None, **env: str) -> Done:
        """Run one command and wait for it."""
        return self.many([Call(args, stdin, env)])[0]

    def many(self, calls: Sequence[Call | tuple[str, ...]]) -> list[Done]:
        """Run independent commands side by side; results in the same order."""
        resolved = [c if isinstance(c, Call) else Call(tuple(c)) for c in calls]
        procs = [(c, self.start(c)) for c in resolved]
        done = []
        for c, proc in procs:
            out, err = proc.communicate(c.stdin, timeout=120)
            done.append(Done(c.args, proc.returncode, out, err))
        return done


def _user(folder: AgentDir, running: AgentProcess) -> User:
    token_file = folder.path.parent / "admin.token"
    token_file.write_text(folder.token + "\n")
    token_file.chmod(0o600)
    return User(running, token_file)


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[User]:
    """One running agent shared by the workload-command tests of this module."""
    folder = init_agent_dir(tmp_path_factory.mktemp("cli") / "agent")
    running = start_agent(folder)
    try:
        yield _user(folder, running)
    finally:
        running.stop()


@pytest.fixture
def own_user(tmp_path: Path) -> Iterator[User]:
    """A running agent of its own, for commands that change keys or the audit log."""
    folder = init_agent_dir(tmp_path / "agent")
    running = start_agent(folder)
    try:
        yield _user(folder, running)
    finally:
        running.stop()


# --------------------------------------------------------------------------- secrets


def test_secret_lifecycle_put_get_list_versions_rotate_rm(user: User) -> None:
    first = user("secrets", "put", "life/db", "first-value", "--label", "env=prod").ok()
    assert re.fullmatch(r"life/db: version 1 \(sec_[a-z2-7]{26}\)\n", first.out), first.out
    assert (
        user("secrets", "put", "life/db", "second-value").ok().out.startswith("life/db: version 2 ")
    )

    get, old, listing, versions = user.many(
        [
            ("secrets", "get", "life/db"),
            ("secrets", "get", "life/db", "--version", "1", "--json"),
            ("secrets", "list", "--prefix", "life/"),
            ("secrets", "versions", "life/db"),
        ]
    )
    assert get.ok().out == "second-value\n"
    doc = json.loads(old.ok().out)
    assert doc["value"] == "first-value" and doc["version"] == 1 and doc["current_version"] == 2
    assert doc["name"] == "life/db" and doc["labels"] == {"env": "prod"}
    assert re.fullmatch(
        r"life/db\s+v2\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\s+env=prod\n", listing.ok().out
    ), listing.out
    lines = versions.ok().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("v2") and lines[0].endswith("(current)")
    assert lines[1].startswith("v1") and "create" in lines[1] and "current" not in lines[1]

    rotated = user("secrets", "rotate", "life/db", "--length", "24", "--no-symbols").ok()
    assert rotated.out == "life/db: rotated to version 3\n"
    with user.agent.client() as kv:
        new_value = kv.get("life/db")["value"]
        assert re.fullmatch(r"[A-Za-z0-9]{24}", new_value), new_value
        assert new_value not in rotated.out + rotated.err

        assert user("secrets", "rm", "life/db").ok().out.startswith("life/db: deleted (undo with")
        assert [m["name"] for m in kv.list("life/", deleted=True)["secrets"]] == ["life/db"]
        assert kv.list("life/")["secrets"] == []

        assert user("secrets", "rm", "life/db", "--undelete").ok().out == "life/db: restored\n"
        assert kv.get("life/db")["value"] == new_value

        assert user("secrets", "rm", "life/db", "--destroy").ok().out == "life/db: destroyed\n"
        assert kv.list("life/", deleted=True)["secrets"] == kv.list("life/")["secrets"] == []


def test_put_from_stdin_and_run_a_command_with_secrets(user: User, tmp_path: Path) -> None:
    value = "a value with spaces, 'quotes' and $dollars"
    assert (
        user("secrets", "put", "run/db", "--stdin", stdin=value + "\n")
        .ok()
        .out.startswith("run/db: version 1 ")
    )
    with user.agent.client() as kv:
        assert kv.get("run/db")["value"] == value  # the trailing newline is not part of it
        kv.create("run/api", "api-key-value")

    seen = tmp_path / "seen"
    script = (
        f'printf "%s|%s|%s" "$DB_PASS" "$API_KEY" "${{KEYVAULT_TOKEN:-unset}}" > {seen}; '
        'echo "child got ${#DB_PASS} characters"; exit 3'
    )
    token = user.agent.dir.token
    ran, missing = user.many(
        [
            call(
                "run",
                "--secret",
                "DB_PASS=run/db",
                "--secret",
                "API_KEY=run/api",
                "--",
                "sh",
                "-c",
                script,
                KEYVAULT_TOKEN=token,
            ),
            call(
                "run", "--secret", "X=run/missing", "--", "sh", "-c", f"touch {tmp_path / 'never'}"
            ),
        ]
    )
    assert ran.code == 3, "keyvault run hands the command's exit code back"
    assert ran.out == f"child got {len(value)} characters\n" and ran.err == ""
    # The child sees both values, and not the token keyvault used; keyvault prints neither.
    assert seen.read_text() == f"{value}|api-key-value|unset"
    assert "run/missing" in missing.one_line_error(EXIT_NOT_FOUND)
    assert not (tmp_path / "never").exists()


# --------------------------------------------------------------------------- tokens


def test_token_create_list_revoke_and_a_revoked_token_is_refused(user: User) -> None:
    created = user(
        "agent",
        "token",
        "create",
        "--name",
        "ci-reader",
        "--allow",
        "ci/**:read,list",
        "--ttl",
        "1h",
    ).ok()
    secret = created.out.strip()
    assert re.fullmatch(r"kvt_[A-Za-z0-9_\-]{40,}", secret) and created.out.count("\n") == 1
    token_id = re.search(r"token (tok_[a-z2-7]+) \(ci-reader\) created", created.err)
    assert token_id, created.err
    tid = token_id[1]
    with user.agent.client() as kv:
        kv.create("ci/shared", "for-ci")

    as_ci = {"KEYVAULT_TOKEN_FILE": "", "KEYVAULT_TOKEN": secret}
    listing, read = user.many(
        [
            call("agent", "token", "list"),
            call("secrets", "get", "ci/shared", **as_ci),
        ]
    )
    row = next(line for line in listing.ok().out.splitlines() if line.startswith(tid))
    assert "ci-reader" in row and "expires" in row and "ci/**:list,read" in row
    assert secret not in listing.out and user.agent.dir.token not in listing.out
    assert read.ok().out == "for-ci\n"

    assert user("agent", "token", "revoke", tid).ok().out == f"token {tid} revoked\n"
    refused = user("secrets", "get", "ci/shared", **as_ci)
    assert refused.one_line_error(EXIT_DENIED) == "error: unknown or revoked token"
    with user.agent.client() as kv:
        mine = [t for t in kv.list_tokens()["tokens"] if t["id"] == tid]
        assert len(mine) == 1 and mine[0]["revoked_at"]


# --------------------------------------------------------------------------- errors


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_errors_are_one_line_with_their_exit_codes(user: User, tmp_path: Path) -> None:
    bad_token = tmp_path / "bad.token"
    bad_token.write_text("kvt_" + "A" * 43 + "\n")
    port = _closed_port()
    wrong, unknown, unreachable, again = user.many(
        [
            call("secrets", "get", "x/y", KEYVAULT_TOKEN_FILE=str(bad_token)),
            call("secrets", "get", "no/such/secret"),
            call("secrets", "list", "--url", f"https://127.0.0.1:{port}"),
            call("agent", "init", "--data-dir", str(user.agent.dir.path)),
        ]
    )
    assert "unknown or revoked token" in wrong.one_line_error(EXIT_DENIED)
    assert "no/such/secret" in unknown.one_line_error(EXIT_NOT_FOUND)
    line = unreachable.one_line_error(EXIT_UNAVAILABLE)
    assert f"127.0.0.1:{port}" in line and "cannot reach the agent" in line
    assert again.code == EXIT_CONFIG and "Traceback" not in again.err, again.err
    line = again.err.splitlines()[-1]
    assert line.startswith("error: ") and "already holds an agent" in line
    assert str(user.agent.dir.path) in line
    assert user.agent.proc.poll() is None


# --------------------------------------------------------------------------- keys, backup, audit


def _open_backup(folder: Path, key_file: Path) -> dict[str, str]:
    """Decrypt every secret of a backed-up store with the given master key file."""
    conn = sqlite3.connect(folder / "store.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        names = [r[0] for r in conn.execute("SELECT name FROM kv_secrets")]
    finally:
        conn.close()
    store = Store(f"sqlite:///{folder / 'store.db'}")
    try:
        keys = KeyManager.unlock(store, KeySource.from_key_file(key_file))
        service = SecretService(store, keys, cache=False)

        async def read() -> dict[str, str]:
            return {n: (await service.reveal(n, None))[2] for n in names}

        return asyncio.run(read())
    finally:
        store.close()


def test_key_rotation_rekey_backup_and_audit_verify(own_user: User, tmp_path: Path) -> None:
    user = own_user
    values = {f"keys/s{i}": f"value-{i}" for i in range(30)}
    with user.agent.client() as kv:
        for name, value in values.items():
            kv.create(name, value)

    rotated = user("agent", "rotate-kek").ok()
    assert "re-wrapping data keys" in rotated.out + rotated.err
    last = rotated.out.strip().splitlines()[-1]
    assert last == f"KEK v2 active; {len(values)} data keys re-wrapped; destroyed: v1", last

    new_key = tmp_path / "new-master.key"
    new_key.write_bytes(os.urandom(32))
    new_key.chmod(0o600)
    rekeyed = user("agent", "rekey", "--new-key-file", str(new_key)).ok()
    assert "master key changed" in rekeyed.out and str(new_key) in rekeyed.out
    with user.agent.client() as kv:  # the running agent keeps serving
        assert kv.get("keys/s7")["value"] == "value-7"
        assert kv.keys()["active"] == 2

    backup = tmp_path / "backup"
    new_env = {"VAULT_MASTER_KEY_FILE": str(new_key)}
    made, verified = user.many(
        [
            call("agent", "backup", "--out", str(backup), **new_env),
            call("agent", "audit", "verify", "--data-dir", str(user.agent.dir.path), **new_env),
        ]
    )
    assert "backup written to" in made.ok().out
    assert re.search(r"audit log OK: \d+ entries", verified.ok().out), verified.out
    assert _open_backup(backup, new_key) == values
    with pytest.raises(IntegrityError):  # the old master key no longer opens the keystore
        _open_backup(backup, user.agent.dir.path / "master.key")
    assert {p.name for p in backup.iterdir()} >= {"store.db", "audit.log", "audit.head", "tls"}

    # Tamper with one entry in the middle of the audit log (the agent is stopped first).
    assert user.agent.stop() == 0
    log = user.agent.dir.path / "audit.log"
    lines = log.read_bytes().splitlines(keepends=True)
    target = next(i for i in range(len(lines) // 2, len(lines)) if b'"outcome":"ok"' in lines[i])
    entry = json.loads(lines[target])
    lines[target] = lines[target].replace(b'"outcome":"ok"', b'"outcome":"xx"', 1)
    log.write_bytes(b"".join(lines))
    broken = user("agent", "audit", "verify", **new_env)
    assert broken.code != 0
    assert f"entry {entry['seq']} (line {target + 1})" in broken.out, broken.out
    assert "FAILED verification" in broken.one_line_error(broken.code)


# --------------------------------------------------------------------------- --help everywhere


def _walk(
    group: click.Group, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, group
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _walk(command, (*path, name))
        else:
            yield (*path, name), command


def test_help_works_on_every_command_and_subcommand() -> None:
    runner = CliRunner()
    seen = []
    for path, command in _walk(cli):
        result = runner.invoke(cli, [*path, "--help"], catch_exceptions=False)
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith("Usage: "), (path, result.output[:200])
        assert " ".join(path) in result.output.splitlines()[0]
        summary = (command.help or "").strip().splitlines()
        assert summary and summary[0][:30] in " ".join(result.output.split()), path
        seen.append(" ".join(path))
    expected = {
        "secrets put",
        "secrets get",
        "secrets list",
        "secrets versions",
        "secrets rotate",
        "secrets rm",
        "run",
        "agent init",
        "agent run",
        "agent token create",
        "agent token list",
        "agent token revoke",
        "agent rotate-kek",
        "agent rekey",
        "agent audit verify",
        "agent backup",
    }
    assert expected <= set(seen), expected - set(seen)
    version = runner.invoke(cli, ["--version"])
    assert version.exit_code == 0 and "0.1.0" in version.output
