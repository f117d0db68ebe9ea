"""Every error of the workload commands says how to fix it, with the README's exit codes:
real ``keyvault`` subprocesses against a running agent."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.test_cli import EXIT_UNAVAILABLE, User, _user, call
from tests.conftest import init_agent_dir, start_agent

EXIT_USAGE = 2


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[User]:
    """One running agent for this module."""
    folder = init_agent_dir(tmp_path_factory.mktemp("hints") / "agent")
    running = start_agent(folder)
    try:
        yield _user(folder, running)
    finally:
        running.stop()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_errors_name_the_fix(user: User, tmp_path: Path) -> None:
    url = (user.agent.dir.path / "agent.url").read_text().strip()
    host_port = url.removeprefix("https://")
    port = _closed_port()
    no_tls_dir = {"KEYVAULT_DATA_DIR": ""}  # only --url: no CA from a data folder
    plain, no_ca, refused, no_scheme, not_running = user.many(
        [
            call("secrets", "list", "--url", f"http://{host_port}", **no_tls_dir),
            call("secrets", "list", "--url", url, **no_tls_dir),
            call("secrets", "list", "--url", f"https://127.0.0.1:{port}", **no_tls_dir),
            call("secrets", "list", "--url", host_port, **no_tls_dir),
            call("secrets", "list", "--data-dir", str(tmp_path)),
        ]
    )
    assert f"use https://{host_port}" in plain.one_line_error(EXIT_UNAVAILABLE)
    line = no_ca.one_line_error(EXIT_UNAVAILABLE)
    assert "--ca-file" in line and "KEYVAULT_CA_FILE" in line and "tls/ca.crt" in line
    line = refused.one_line_error(EXIT_UNAVAILABLE)
    assert "is the agent running?" in line and "keyvault agent run" in line
    assert "must start with https://" in no_scheme.one_line_error(EXIT_UNAVAILABLE)
    line = not_running.one_line_error(EXIT_UNAVAILABLE)
    assert f"keyvault agent run --data-dir {tmp_path}" in line


def test_stdin_loses_one_trailing_newline_unless_kept(user: User) -> None:
    stripped, kept, crlf, two = user.many(
        [
            call("secrets", "put", "nl/stripped", "--stdin", stdin="v1\n"),
            call("secrets", "put", "nl/kept", "--stdin", "--keep-newline", stdin="v1\n"),
            call("secrets", "put", "nl/crlf", "--stdin", stdin="v1\r\n"),
            call("secrets", "put", "nl/two", "--stdin", stdin="v1\n\n"),
        ]
    )
    for done in (stripped, kept, crlf, two):
        done.ok()
    with user.agent.client() as kv:
        assert kv.get("nl/stripped")["value"] == "v1"
        assert kv.get("nl/kept")["value"] == "v1\n"
        assert kv.get("nl/crlf")["value"] == "v1"
        assert kv.get("nl/two")["value"] == "v1\n"  # exactly one is removed
    helped = user("secrets", "put", "--help").ok()
    text = " ".join(helped.out.split())
    assert "one trailing newline is removed" in text and "--keep-newline" in text


def test_contradictory_options_are_usage_errors_that_change_nothing(user: User) -> None:
    with user.agent.client() as kv:
        kv.create("rm/keep", "still-here")
    both, value_and_stdin, keep_without_stdin = user.many(
        [
            call("secrets", "rm", "rm/keep", "--destroy", "--undelete"),
            call("secrets", "put", "rm/other", "v", "--stdin", stdin="w\n"),
            call("secrets", "put", "rm/other", "v", "--keep-newline"),
        ]
    )
    assert both.code == EXIT_USAGE and "--destroy and --undelete" in both.err
    assert value_and_stdin.code == EXIT_USAGE and "not both" in value_and_stdin.err
    assert keep_without_stdin.code == EXIT_USAGE and "--keep-newline" in keep_without_stdin.err
    with user.agent.client() as kv:
        assert kv.get("rm/keep")["value"] == "still-here"
        assert [m["name"] for m in kv.list("rm/")["secrets"]] == ["rm/keep"]
