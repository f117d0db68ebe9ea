"""Templates in one agent (in-process, real SQLite store and audit log): the sandbox refuses
escapes, files are written 0600 and atomically, a failed render keeps the last good file and
raises one alert, a change re-renders and runs the reload command once, settings are checked.

The same through the control plane with real processes: ``tests/e2e/test_templates.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.assembly import Agent
from agent.settings import load_agent_settings
from agent.templates import sandbox
from agent.templates.service import Templates
from common.errors import ConfigError
from tests.conftest import init_agent_dir

Make = Callable[..., "Any"]


def _configure(folder: Path, templates: list[dict[str, Any]], **limits: Any) -> None:
    path = folder / "agent.yaml"
    config = yaml.safe_load(path.read_text())
    config["templates"] = templates
    if limits:
        config["template_limits"] = limits
    path.write_text(yaml.safe_dump(config))


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    """Factory: an opened agent (SQLite) with the given templates, and its running service."""
    opened: list[tuple[Agent, Templates]] = []
    made = iter(range(100))

    async def factory(templates: list[dict[str, Any]], **limits: Any) -> tuple[Agent, Templates]:
        folder = init_agent_dir(tmp_path / f"agent{next(made)}")
        _configure(folder.path, templates, **limits)
        agent = Agent.open(load_agent_settings(None, folder.path))
        try:
            service = Templates(agent)
        except BaseException:
            agent.close()
            raise
        opened.append((agent, service))
        return agent, service

    yield factory
    for agent, service in opened:
        await service.stop(2)
        agent.close()


async def _until(check: Callable[[], Any], timeout: float = 5, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _alerts(agent: Agent) -> list[dict[str, Any]]:
    rows = agent.store.read_sync(lambda c: c.execute("SELECT kind, body FROM kv_outbox").all())
    return [json.loads(r.body) for r in rows if r.kind == "alert"]


# ---------------------------------------------------------------- the sandbox

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ secret.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{% include '/etc/passwd' %}",
    "{% import '/etc/passwd' as p %}",
    "{{ config }}",
    "{{ request }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ 'x' * 100000000 }}",
    "{{ 2 ** 100000 }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_refuses_escapes(source: str) -> None:
    env = sandbox.environment()
    with pytest.raises(sandbox.TemplateFailure) as caught:
        sandbox.render(
            sandbox.compile_template(env, source), lambda n: None, sandbox.Reads(),
            max_bytes=1024 * 1024, budget=2,
        )  # fmt: skip
    assert caught.value.reason == sandbox.TEMPLATE_ERROR


def test_sandbox_bounds_time_and_size() -> None:
    env = sandbox.environment()
    spin = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(sandbox.TemplateFailure) as slow:
        sandbox.render(sandbox.compile_template(env, spin), lambda n: None, sandbox.Reads(),
                       max_bytes=1024, budget=0.3)  # fmt: skip
    assert slow.value.reason == sandbox.TOO_SLOW and time.monotonic() - started < 2
    big = "{% for i in range(10000) %}0123456789{% endfor %}"
    with pytest.raises(sandbox.TemplateFailure) as large:
        sandbox.render(sandbox.compile_template(env, big), lambda n: None, sandbox.Reads(),
                       max_bytes=1024, budget=2)  # fmt: skip
    assert large.value.reason == sandbox.TOO_LARGE


def test_render_errors_never_hold_a_value() -> None:
    env = sandbox.environment()
    values = {"db/pass": ("sec_x", 3, "hunter2-value"), "cfg": ("sec_y", 1, '{"user": "bob"}')}
    reads = sandbox.Reads()
    ok = sandbox.render(
        sandbox.compile_template(env, "u={{ secret_json('cfg').user }} p={{ secret('db/pass') }}"),
        values.get, reads, max_bytes=1024, budget=2,
    )  # fmt: skip
    assert ok == b"u=bob p=hunter2-value"
    assert reads.used == {"cfg": ("sec_y", 1), "db/pass": ("sec_x", 3)}
    for source in ("{{ {}[secret('db/pass')] }}", "{{ dict(a=1)[secret('db/pass')] }}"):
        reads = sandbox.Reads()
        with pytest.raises(sandbox.TemplateFailure) as caught:
            sandbox.render(sandbox.compile_template(env, source), values.get, reads,
                           max_bytes=1024, budget=2)  # fmt: skip
        assert "hunter2" not in caught.value.message and "***" in caught.value.message
        assert "hunter2" not in repr(reads)


# ---------------------------------------------------------------- the service


async def test_file_is_rendered_0600_and_audited(make: Make, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "app.env"
    dest.parent.mkdir()
    os.chmod(dest.parent, 0o755)
    agent, service = await make([{"inline": "DB={{ secret('db/pass') }}\n",
                                  "destination": str(dest), "name": "app"}])  # fmt: skip
    meta = await agent.secrets.create("db/pass", "first-value")
    service.start()
    await _until(dest.exists, what="the first render")
    assert dest.read_text() == "DB=first-value\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert [p.name for p in dest.parent.iterdir()] == ["app.env"]  # no temporary file left
    entries = [json.loads(line) for line in (agent.settings.data_dir / "audit.log").open()]
    reads = [e for e in entries if e["op"] == "secrets.read" and e["actor"] == "template:app"]
    assert reads and reads[0]["target"] == meta.id and reads[0]["outcome"] == "ok"


async def test_change_rerenders_and_reloads_once(make: Make, tmp_path: Path) -> None:
    dest, ran = tmp_path / "app.conf", tmp_path / "ran.txt"
    hook = tmp_path / "reload.sh"
    hook.write_text(f"#!/bin/sh\necho reloaded >> {ran}\necho 'reload output'\n")
    hook.chmod(0o755)
    agent, service = await make([{
        "inline": "a={{ secret('a') }} b={{ secret('b') }}", "destination": str(dest),
        "on_change": {"command": [str(hook)]}, "min_interval_ms": 1000,
    }])  # fmt: skip
    await agent.secrets.create("a", "1")
    await agent.secrets.create("b", "1")
    await agent.secrets.create("unrelated", "1")
    service.start()
    await _until(lambda: ran.exists() and ran.read_text().count("\n") == 1, what="first reload")
    assert dest.read_text() == "a=1 b=1"

    started = time.monotonic()  # within min_interval of the first render: both changes fold
    await agent.secrets.update("a", value="2")
    await agent.secrets.update("b", value="2")
    await _until(lambda: dest.read_text() == "a=2 b=2", what="the re-render")
    assert time.monotonic() - started < 2
    await asyncio.sleep(1.2)
    assert ran.read_text().count("\n") == 2  # once for the start, once for both changes

    before = dest.stat().st_ino
    await agent.secrets.update("unrelated", value="2")  # not used: nothing happens
    await agent.secrets.update("a", value="2")  # a new version, same content: no write
    await asyncio.sleep(1.2)
    assert dest.stat().st_ino == before and ran.read_text().count("\n") == 2

    await agent.secrets.update("b", value="3")  # the window has passed: rendered at once
    started = time.monotonic()
    await _until(lambda: dest.read_text() == "a=2 b=3", what="the next re-render")
    assert time.monotonic() - started < 0.8  # not held for the 1 s window
    await _until(lambda: ran.read_text().count("\n") == 3, what="its one reload")


async def test_missing_secret_keeps_last_good_file_and_alerts(make: Make, tmp_path: Path) -> None:
    dest = tmp_path / "app.conf"
    agent, service = await make([{"inline": "{{ secret('svc/key') }}", "destination": str(dest)}])
    agent.secrets.feed.track()  # as once enrolled: alerts go to the uplink's outbox
    await agent.secrets.create("svc/key", "good")
    service.start()
    await _until(lambda: dest.exists() and dest.read_text() == "good", what="first render")

    await agent.secrets.delete("svc/key")
    [alert] = await _until(lambda: _alerts(agent), what="the alert")
    assert alert["kind"] == "template_failed" and "missing_secret" in alert["message"]
    assert "svc/key" not in alert["message"] and str(dest) not in alert["message"]
    assert dest.read_text() == "good"  # the last good file stays
    assert service.failures >= 1

    await agent.secrets.undelete("svc/key")
    await agent.secrets.update("svc/key", value="better")
    await _until(lambda: dest.read_text() == "better", what="recovery")
    assert len(_alerts(agent)) == 1


async def test_template_error_and_write_error_keep_the_file(make: Make, tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    dest = folder / "app.conf"
    agent, service = await make([
        {"inline": "{{ secret('k') }}", "destination": str(dest), "name": "plain"},
        {"inline": "{{ secret_json('k').user }}", "destination": str(tmp_path / "j"), "name": "j"},
    ])  # fmt: skip
    await agent.secrets.create("k", '{"user": "u1"}')
    service.start()
    await _until(lambda: (tmp_path / "j").exists() and dest.exists(), what="first renders")
    await agent.secrets.update("k", value="not json")
    await _until(lambda: dest.read_text() == "not json", what="plain follows")
    assert (tmp_path / "j").read_text() == "u1"  # template error: last good kept
    if os.geteuid() != 0:  # a folder the agent may not write in
        folder.chmod(0o500)
    else:  # root writes through any mode: a folder in the file's place cannot be replaced
        dest.unlink()
        dest.mkdir()
    try:
        await agent.secrets.update("k", value="third")
        await _until(lambda: service.items[0].failing == sandbox.WRITE_ERROR, what="write error")
        assert dest.is_dir() or dest.read_text() == "not json"
    finally:
        folder.chmod(0o700)
        if dest.is_dir():
            dest.rmdir()
    await agent.secrets.update("k", value="fourth")
    await _until(
        lambda: dest.is_file() and dest.read_text() == "fourth" and not service.items[0].failing,
        what="recovery after the error",
    )


async def test_no_file_is_written_when_its_reads_cannot_be_audited(
    make: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fail-closed, as the API's reads: the audit entry of every value goes before the file
    dest = tmp_path / "app.conf"
    agent, service = await make([{"inline": "{{ secret('k') }}", "destination": str(dest)}])
    await agent.secrets.create("k", "first")
    service.start()
    await _until(lambda: dest.exists(), what="the first render")

    def disk_full(line: bytes, head: bytes | None) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(agent.audit, "_write", disk_full)
    await agent.secrets.update("k", value="second")
    await _until(
        lambda: service.items[0].failing == sandbox.AUDIT_UNAVAILABLE, what="audit failure"
    )
    assert dest.read_text() == "first"  # the value read without an audit entry never left
    monkeypatch.undo()
    await agent.secrets.update("k", value="third")
    await _until(lambda: dest.read_text() == "third", what="recovery once the log is writable")
    entries = [json.loads(line) for line in (agent.settings.data_dir / "audit.log").open()]
    reads = [e for e in entries if e["op"] == "secrets.read" and e["actor"].startswith("template")]
    assert len(reads) == 2  # the first render and the recovered one; none for the refused one


async def test_bad_templates_stop_the_start(make: Make, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"templates\[0\].*line 1"):
        await make([{"inline": "{{ oops", "destination": str(tmp_path / "x")}])
    with pytest.raises(ConfigError, match="does not exist"):
        await make([{"inline": "x", "destination": str(tmp_path / "nope" / "x")}])
    with pytest.raises(ConfigError, match="cannot read source"):
        await make([{"source": str(tmp_path / "missing.tpl"), "destination": str(tmp_path / "x")}])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"inline": "x", "source": "/a", "destination": "/tmp/x"}, "exactly one of source"),
        ({"destination": "/tmp/x"}, "exactly one of source"),
        ({"inline": "x", "destination": "rel/x"}, "absolute path"),
        ({"inline": "x", "destination": "/tmp/x", "mode": "0666"}, "anyone write"),
        ({"inline": "x", "destination": "/tmp/x", "mode": "rw"}, "must be octal"),
        ({"inline": "x", "destination": "/tmp/x", "on_change": {}}, "exactly one of command"),
        ({"inline": "x", "destination": "/tmp/x", "on_change": {"command": ["sh"]}}, "absolute"),
        ({"inline": "x", "destination": "/tmp/x",
          "on_change": {"signal": {"pid_file": "/p", "signal": "SIGNOPE"}}}, "not a signal"),
        ({"inline": "x", "destination": "/tmp/x", "owner": "no-such-user-kv"}, "not a user"),
    ],
)  # fmt: skip
def test_template_settings_are_checked(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    folder = init_agent_dir(tmp_path / "agent")
    _configure(folder.path, [entry])
    with pytest.raises(ConfigError, match=message):
        load_agent_settings(None, folder.path)


async def test_owner_only_for_root(make: Make, tmp_path: Path) -> None:
    import pwd

    if os.geteuid() != 0:
        folder = init_agent_dir(tmp_path / "agent")
        _configure(folder.path, [{"inline": "x", "destination": "/tmp/x", "owner": "0"}])
        with pytest.raises(ConfigError, match="only an agent running as root"):
            load_agent_settings(None, folder.path)
        return
    nobody = pwd.getpwnam("nobody")  # root: the file is given to the configured owner
    dest = tmp_path / "owned.env"
    _, service = await make([{"inline": "x", "destination": str(dest), "owner": "nobody",
                                  "group": str(nobody.pw_gid), "mode": "0640"}])  # fmt: skip
    service.start()
    await _until(dest.exists, what="the render")
    st = dest.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, nobody.pw_gid, 0o640)


def test_template_limits(tmp_path: Path) -> None:
    folder = init_agent_dir(tmp_path / "agent")
    many = [{"inline": "x", "destination": f"/tmp/x{i}"} for i in range(3)]
    _configure(folder.path, many, max_templates=2)
    with pytest.raises(ConfigError, match="max_templates"):
        load_agent_settings(None, folder.path)
    _configure(folder.path, [{"inline": "x", "destination": "/tmp/a/x"},
                             {"inline": "y", "destination": "/tmp/b/x"}])  # fmt: skip
    with pytest.raises(ConfigError, match="share the name"):
        load_agent_settings(None, folder.path)


def test_agent_process_refuses_to_start_with_a_bad_template(tmp_path: Path) -> None:
    folder = init_agent_dir(tmp_path / "agent")
    _configure(folder.path, [{"inline": "{% if %}", "destination": str(tmp_path / "x")}])
    done = subprocess.run(
        [sys.executable, "-m", "apps.cli.main", "agent", "run", "--data-dir", str(folder.path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 78, done
    assert "templates[0] (x): syntax error on line 1" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


async def test_signal_reload_and_a_failing_command_logged_without_values(
    make: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    got, pid_file = tmp_path / "signals.txt", tmp_path / "app.pid"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import os, signal, sys, time\n"
        f"signal.signal(signal.SIGUSR1, lambda *a: open({str(got)!r}, 'a').write('usr1\\n'))\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n",
    )  # fmt: skip
    try:
        await _until(lambda: pid_file.exists() and pid_file.read_text(), what="the child's pid")
        hook = tmp_path / "bad-reload.sh"
        hook.write_text(f'#!/bin/sh\necho "could not load $(cat {tmp_path / "b.env"})"\nexit 3\n')
        hook.chmod(0o755)
        agent, service = await make([
            {"inline": "{{ secret('s') }}", "destination": str(tmp_path / "a.env"),
             "on_change": {"signal": {"pid_file": str(pid_file), "signal": "SIGUSR1"}}},
            {"inline": "{{ secret('s') }}", "destination": str(tmp_path / "b.env"),
             "on_change": {"command": [str(hook)]}},
        ])  # fmt: skip
        agent.secrets.feed.track()
        await agent.secrets.create("s", "first-value-xyz")
        service.start()
        await _until(lambda: got.exists() and got.read_text() == "usr1\n", what="the signal")
        await agent.secrets.update("s", value="second-value-xyz")
        await _until(lambda: got.read_text() == "usr1\n" * 2, what="one more signal")
        await _until(lambda: service.failures >= 2, what="the reload failures")
        text = caplog.text
        assert "exited with 3: could not load ***" in text
        assert "value-xyz" not in text
        assert any("reload_failed" in a["message"] for a in _alerts(agent))
    finally:
        child.kill()
        await child.wait()


async def test_a_change_during_a_render_is_not_lost(
    make: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "r.env"
    agent, service = await make(
        [{"inline": "{{ secret('a') }}", "destination": str(dest), "min_interval_ms": 0}]
    )
    await agent.secrets.create("a", "1")
    read, go = asyncio.Event(), asyncio.Event()
    real = service._reveal

    async def held(name: str) -> Any:
        found = await real(name)
        read.set()
        await go.wait()  # the render has read version 1 and is held here
        return found

    monkeypatch.setattr(service, "_reveal", held)
    service.start()
    await asyncio.wait_for(read.wait(), 5)
    await agent.secrets.update("a", value="2")  # committed while the template renders
    await asyncio.sleep(0.3)  # the change feed has been looked at meanwhile
    monkeypatch.setattr(service, "_reveal", real)
    go.set()
    await _until(lambda: dest.exists() and dest.read_text() == "2", what="the second render")
