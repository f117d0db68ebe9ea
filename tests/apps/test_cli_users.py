"""``keyvault users …`` against a real control plane and a real Secret Service."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner, Result

from apps.cli.main import cli
from tests.apps.conftest import OWNER, PASSWORD, LiveControlPlane

NEW = "a brand new passphrase"


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    """``keyvault ARGS`` in-process."""
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


def ok(result: Result) -> str:
    """The output of a command that must succeed."""
    assert result.exit_code == 0, (result.exit_code, result.output, result.stderr)
    return result.stdout


def one_error(result: Result, code: int, fragment: str) -> None:
    """Exactly one ``error:`` line with ``fragment`` and exit code ``code``."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


def token_in(text: str, prefix: str) -> str:
    """The ``prefix…`` token printed in ``text``."""
    found = re.search(rf"--token ({prefix}\S+)", text)
    assert found, text
    return found.group(1)


def login(live: LiveControlPlane, email: str, password: str) -> None:
    """``keyvault login`` as ``email``."""
    ok(run("login", "--control-plane", live.url, "--email", email, input=password + "\n"))


def test_users_lifecycle_from_the_cli(
    keyring_env: dict[str, str], live_cp: LiveControlPlane
) -> None:
    login(live_cp, OWNER, PASSWORD)
    out = ok(run("users", "invite", "new@example.com", "--role", "viewer"))
    invitation = token_in(out, "kvi_")
    joined = run(
        *("users", "accept", "--control-plane", live_cp.url, "--token", invitation),
        env={"KEYVAULT_NEW_PASSWORD": PASSWORD},
    )
    assert "joined as new@example.com (viewer)" in ok(joined)
    listing = ok(run("users", "list"))
    assert re.search(r"new@example.com\s+viewer\s+usr_", listing), listing
    assert "new@example.com is now operator" in ok(
        run("users", "role", "new@example.com", "operator")
    )
    # the owner may not be demoted while they are the last one: one line, nothing changed
    one_error(run("users", "role", OWNER, "admin"), 65, "last owner")
    # sessions: the new user logs in twice elsewhere; the owner sees and ends them
    live_cp.token("new@example.com")
    live_cp.token("new@example.com")
    sessions = ok(run("users", "sessions", "new@example.com"))
    assert len(re.findall(r"ses_", sessions)) == 2, sessions
    assert "2 session(s) ended" in ok(run("users", "end-sessions", "new@example.com"))
    # password reset: a token once, then the user chooses a new password
    out = ok(run("users", "reset-password", "new@example.com"))
    reset = token_in(out, "kvr_")
    done = run(
        *("users", "set-password", "--control-plane", live_cp.url, "--token", reset),
        env={"KEYVAULT_NEW_PASSWORD": NEW},
    )
    assert "password set" in ok(done)
    # own sessions and password, as the new user
    login(live_cp, "new@example.com", NEW)
    assert "this one" in ok(run("users", "sessions"))
    changed = run(
        "users",
        "change-password",
        env={"KEYVAULT_PASSWORD": NEW, "KEYVAULT_NEW_PASSWORD": PASSWORD},
    )
    assert "password changed" in ok(changed)
    # an operator may not manage users: one line, exit 77
    one_error(run("users", "list"), 77, "admin")
    login(live_cp, OWNER, PASSWORD)
    assert "removed new@example.com" in ok(run("users", "remove", "new@example.com", "--yes"))
    assert "new@example.com" not in ok(run("users", "list"))
    one_error(run("users", "remove", "ghost@example.com", "--yes"), 66, "no user ghost@")


@pytest.mark.parametrize(
    "command",
    [
        "users",
        "users list",
        "users invite",
        "users accept",
        "users role",
        "users remove",
        "users reset-password",
        "users set-password",
        "users change-password",
        "users sessions",
        "users end-sessions",
    ],
)
def test_every_users_command_has_help(command: str) -> None:
    result = run(*command.split(), "--help")
    assert result.exit_code == 0 and "Usage:" in result.stdout and result.stdout.count("\n") > 3


def test_users_accept_refuses_plain_http_off_loopback_in_one_line() -> None:
    result = run(
        *("users", "accept", "--control-plane", "http://10.99.0.1:8443", "--token", "kvi_x"),
        env={"KEYVAULT_NEW_PASSWORD": "a long enough password"},
    )
    one_error(result, 64, "refusing http://10.99.0.1:8443")
