"""``keyvault users …``: the organisation's operators — list, invite, roles, removal,
passwords and sessions.

A USER argument is a user id (``usr_…``) or an e-mail address. Tokens (invitations, password
resets) are printed once and never stored. Passwords are asked for (hidden) or read from
KEYVAULT_PASSWORD / KEYVAULT_NEW_PASSWORD.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from apps.cli.operator import current_session, echo_json, operator_api, table
from common.cliutil import friendly_errors
from common.errors import NotFoundError, ValidationError

ROLES = ("viewer", "operator", "admin", "owner")


def _user_id(cp: Any, user: str) -> str:
    """A user id from an id or an e-mail address of the organisation."""
    if user.startswith("usr_"):
        return user
    wanted = user.strip().lower()
    for row in cp.list_users():
        if row["email"] == wanted:
            return str(row["id"])
    raise NotFoundError(f"no user {user} in your organisation; see `keyvault users list`")


def _new_password(prompt: str = "New password") -> str:
    return os.environ.get("KEYVAULT_NEW_PASSWORD") or str(
        click.prompt(prompt, hide_input=True, confirmation_prompt=True)
    )


@click.group("users")
def users_group() -> None:
    """Operators of your organisation: roles, passwords, sessions (admins manage others)."""


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly_errors
def list_cmd(as_json: bool) -> None:
    """Every user of the organisation with their role."""
    with operator_api(current_session()) as cp:
        users = cp.list_users()
    if as_json:
        echo_json(users)
        return
    rows = [(u["email"], u["role"], u["id"], u["created_at"]) for u in users]
    click.echo(table(("EMAIL", "ROLE", "ID", "CREATED"), rows))


@users_group.command("invite")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), required=True, help="Role on joining.")
@friendly_errors
def invite_cmd(email: str, role: str) -> None:
    """Invite EMAIL; prints the single-use invitation token once."""
    with operator_api(current_session()) as cp:
        inv = cp.invite(email, role)
        url = cp.url
    click.echo(f"invited {inv['email']} as {inv['role']} (until {inv['expires_at']})")
    click.echo(
        f"they join with: keyvault users accept --control-plane {url} --token {inv['token']}"
    )


def _anonymous_client(url: str, ca_file: Path | None, ca_pin: str | None) -> Any:
    from common.cpclient import ControlPlaneClient

    return ControlPlaneClient(url, ca_file=ca_file, pin=ca_pin)


def _unauthenticated(fn: Any) -> Any:
    """``--control-plane``, ``--ca-file``, ``--ca-pin``, ``--token`` for commands without a
    session (joining, completing a reset)."""
    for option in reversed(
        [
            click.option("--control-plane", "url", required=True, help="Control-plane URL."),
            click.option(
                "--ca-file",
                type=click.Path(path_type=Path, dir_okay=False, exists=True),
                help="CA of a private deployment.",
            ),
            click.option("--ca-pin", help="sha256:… pin of the control plane's key."),
            click.option("--token", required=True, help="The token you were given."),
        ]
    ):
        fn = option(fn)
    return fn


@users_group.command("accept")
@_unauthenticated
@friendly_errors
def accept_cmd(url: str, ca_file: Path | None, ca_pin: str | None, token: str) -> None:
    """Join an organisation with an invitation token; then `keyvault login`."""
    with _anonymous_client(url, ca_file, ca_pin) as cp:
        user = cp.accept_invitation(token, _new_password("Choose a password"))
    click.echo(f"joined as {user['email']} ({user['role']}); now run `keyvault login`")


@users_group.command("role")
@click.argument("user")
@click.argument("role", type=click.Choice(ROLES))
@friendly_errors
def role_cmd(user: str, role: str) -> None:
    """Give USER the role ROLE (never above yours; the last owner stays owner)."""
    with operator_api(current_session()) as cp:
        row = cp.set_role(_user_id(cp, user), role)
    click.echo(f"{row['email']} is now {row['role']}")


@users_group.command("remove")
@click.argument("user")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@friendly_errors
def remove_cmd(user: str, yes: bool) -> None:
    """Remove USER from the organisation; their sessions end at once."""
    if not yes:
        click.confirm(f"Remove {user} and end their sessions?", abort=True)
    with operator_api(current_session()) as cp:
        cp.remove_user(_user_id(cp, user))
    click.echo(f"removed {user}")


@users_group.command("reset-password")
@click.argument("user")
@friendly_errors
def reset_cmd(user: str) -> None:
    """Lock USER's password and end their sessions; prints a single-use reset token once."""
    with operator_api(current_session()) as cp:
        reset = cp.reset_password(_user_id(cp, user))
        url = cp.url
    click.echo(f"{user} is locked out until they choose a new password (by {reset['expires_at']})")
    click.echo(
        f"they do it with: keyvault users set-password --control-plane {url} "
        f"--token {reset['token']}"
    )


@users_group.command("set-password")
@_unauthenticated
@friendly_errors
def set_password_cmd(url: str, ca_file: Path | None, ca_pin: str | None, token: str) -> None:
    """Choose a new password with a reset token an admin gave you."""
    with _anonymous_client(url, ca_file, ca_pin) as cp:
        cp.complete_reset(token, _new_password())
    click.echo("password set; now run `keyvault login`")


@users_group.command("change-password")
@friendly_errors
def change_password_cmd() -> None:
    """Change your own password; your other sessions end."""
    session = current_session()
    current = os.environ.get("KEYVAULT_PASSWORD") or click.prompt(
        "Current password", hide_input=True
    )
    new = _new_password()
    if new == current:
        raise ValidationError("the new password is the same as the current one")
    with operator_api(session) as cp:
        result = cp.change_password(str(current), new)
    click.echo(f"password changed; {result['sessions_ended']} other session(s) ended")


@users_group.command("sessions")
@click.argument("user", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly_errors
def sessions_cmd(user: str | None, as_json: bool) -> None:
    """Live sessions of USER (admins), or your own."""
    with operator_api(current_session()) as cp:
        sessions = cp.list_sessions(_user_id(cp, user) if user else None)
    if as_json:
        echo_json(sessions)
        return
    rows = [
        (s["id"], s["created_at"], s["expires_at"], "this one" if s["current"] else "")
        for s in sessions
    ]
    click.echo(table(("SESSION", "STARTED", "EXPIRES", ""), rows))


@users_group.command("end-sessions")
@click.argument("user", required=False)
@click.option("--session", "session_id", help="End only this session (ses_…).")
@friendly_errors
def end_sessions_cmd(user: str | None, session_id: str | None) -> None:
    """End the sessions of USER (admins), or your own (this one too, unless --session)."""
    with operator_api(current_session()) as cp:
        result = cp.end_sessions(_user_id(cp, user) if user else None, session_id)
    click.echo(f"{result['ended']} session(s) ended")
