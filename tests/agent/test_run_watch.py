"""``keyvault run --watch`` with real child processes against a real agent over mutual TLS:
a rotated or updated secret reaches the child (restarted, or signalled and rereading
``--env-file``), also across an agent restart (the stream reconnects and re-checks)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import AgentDir, AgentProcess, init_agent_dir, start_agent

CHILD = """
import os, shlex, signal, sys, time
out = sys.argv[1]
def say(value):
    with open(out, "a") as fh:
        fh.write(f"{os.getpid()} {value}\\n")
def reread(*_):
    with open(sys.argv[2]) as fh:
        say(dict(shlex.split(line)[0].split("=", 1) for line in fh if line.strip())["DB_PASS"])
if len(sys.argv) > 2:
    signal.signal(signal.SIGHUP, reread)
say(os.environ["DB_PASS"])
while True:
    time.sleep(0.05)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    folder = init_agent_dir(tmp_path / "agent", client_cert="required", port=free_port())
    running = start_agent(folder)
    try:
        yield running
    finally:
        running.stop()


def watch(
    folder: AgentDir, tmp_path: Path, *extra: str, args: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(CHILD))
    token = tmp_path / "token"
    token.write_text(folder.token)
    env = {**os.environ, "KEYVAULT_DATA_DIR": str(folder.path), "KEYVAULT_TOKEN_FILE": str(token)}
    cmd = [sys.executable, "-m", "apps.cli.main", "run", "--watch", "--secret", "DB_PASS=app/db"]
    log = (tmp_path / "watch.log").open("ab")
    return subprocess.Popen(
        [*cmd, *extra, "--", sys.executable, str(child), str(tmp_path / "out"), *args],
        env=env,
        stdout=log,
        stderr=log,
    )


def lines(tmp_path: Path) -> list[tuple[int, str]]:
    out = tmp_path / "out"
    if not out.exists():
        return []
    return [(int(p), v) for p, v in (ln.split(" ", 1) for ln in out.read_text().splitlines())]


def wait_for(check: Callable[[], bool], tmp_path: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    log = (tmp_path / "watch.log").read_text() if (tmp_path / "watch.log").exists() else ""
    raise AssertionError(f"timed out; child saw {lines(tmp_path)}; watcher log: {log[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(20)


def test_restart_mode_gives_the_new_value_to_a_new_child(
    agent: AgentProcess, tmp_path: Path
) -> None:
    with agent.client() as kv:
        kv.create("app/db", "first-value")
        proc = watch(agent.dir, tmp_path, "--grace", "2")
        try:
            wait_for(lambda: [v for _, v in lines(tmp_path)] == ["first-value"], tmp_path)
            rotated = kv.rotate("app/db")
            new = kv.get("app/db")["value"]
            assert rotated["version"] == 2
            wait_for(lambda: lines(tmp_path)[-1][1] == new, tmp_path)
            kv.update("app/db", "third-value")
            wait_for(lambda: lines(tmp_path)[-1][1] == "third-value", tmp_path)
            kv.create("app/other", "unrelated")  # not given to the child: no restart
            time.sleep(0.5)
            seen = lines(tmp_path)
            assert [v for _, v in seen] == ["first-value", new, "third-value"]
            assert len({pid for pid, _ in seen}) == 3  # a new child each time
            for pid, _ in seen[:-1]:  # the old children are gone
                with pytest.raises(ProcessLookupError):
                    os.kill(pid, 0)
        finally:
            code = stop(proc)
    assert code == 128 + signal.SIGTERM  # the child's end, passed on
    assert "first-value" not in (tmp_path / "watch.log").read_text()


def test_signal_mode_rewrites_the_env_file_and_signals_the_same_child(
    agent: AgentProcess, tmp_path: Path
) -> None:
    env_file = tmp_path / "app.env"
    with agent.client() as kv:
        kv.create("app/db", "before it's rotated")
        proc = watch(
            agent.dir,
            tmp_path,
            "--on-change",
            "signal:HUP",
            "--env-file",
            str(env_file),
            args=(str(env_file),),
        )
        try:
            wait_for(lambda: len(lines(tmp_path)) == 1, tmp_path)
            assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
            kv.update("app/db", "after: $new 'value'")
            wait_for(lambda: lines(tmp_path)[-1][1] == "after: $new 'value'", tmp_path)
            seen = lines(tmp_path)
            assert seen[0][1] == "before it's rotated" and seen[0][0] == seen[-1][0]
            assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        finally:
            stop(proc)


def test_stream_reconnects_after_an_agent_restart_and_rechecks(
    agent: AgentProcess, tmp_path: Path
) -> None:
    with agent.client() as kv:
        kv.create("app/db", "one")
    proc = watch(agent.dir, tmp_path)
    try:
        wait_for(lambda: len(lines(tmp_path)) == 1, tmp_path)
        agent.stop()
        again = start_agent(agent.dir)
        agent.proc = again.proc
        with again.client() as kv:
            kv.update("app/db", "two")  # likely before the stream is back: the re-check finds it
        wait_for(lambda: lines(tmp_path)[-1][1] == "two", tmp_path, timeout=20)
    finally:
        stop(proc)


def test_bad_on_change_is_a_clear_error(agent: AgentProcess, tmp_path: Path) -> None:
    proc = watch(agent.dir, tmp_path, "--on-change", "signal:NOPE")
    assert proc.wait(20) == 64
    log = (tmp_path / "watch.log").read_text()
    assert "unknown signal 'NOPE'" in log and "Traceback" not in log
