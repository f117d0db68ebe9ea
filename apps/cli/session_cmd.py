"""``keyvault login``, ``logout`` and ``whoami``: the operator's session with the control plane.

The session token goes to the OS keyring only; the profile (URL, e-mail, organisation) to
``$XDG_CONFIG_HOME/keyvault/profile.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from apps.cli.operator import current_session, operator_api
from common.cliutil import friendly_errors
from common.errors import ValidationError


@click.command("login")
@click.option(
    "--control-plane",
    "url",
    envvar="KEYVAULT_CONTROL_PLANE",
    help="Control-plane URL, e.g. https://keyvault.example.com (default: the last one used).",
)
@click.option(
    "--email", envvar="KEYVAULT_EMAIL", help="Your e-mail address (default: the last one used)."
)
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="KEYVAULT_CONTROL_PLANE_CA_FILE",
    help="CA that signed the control plane's certificate (default: the system's CAs).",
)
@click.option(
    "--ca-pin",
    envvar="KEYVAULT_CONTROL_PLANE_PIN",
    help="sha256:… pin of the control plane's TLS key, instead of a CA file.",
)
@click.option(
    "--sso",
    "sso_org",
    metavar="ORG_ID",
    help="Sign in through your organisation's identity provider (a browser opens).",
)
@friendly_errors
def login_cmd(
    url: str | None,
    email: str | None,
    ca_file: Path | None,
    ca_pin: str | None,
    sso_org: str | None,
) -> None:
    """Log in to the control plane; the session token is kept in the OS keyring.

    The password is asked for, or read from KEYVAULT_PASSWORD. Plain http:// is refused
    except to this machine (localhost).
    """
    from apps.core.keyring_store import CredentialStore
    from apps.core.session import Session, previous_profile
    from common.cpclient import check_url

    previous = previous_profile()
    url = url or (previous.control_plane_url if previous else None)
    email = email or (previous.email if previous else None)
    if not url:
        raise ValidationError("give the control plane with --control-plane URL")
    url = check_url(url)  # before the keyring and the password prompt
    if sso_org is not None:
        _login_sso(url, sso_org, ca_file, ca_pin)
        return
    if not email:
        raise ValidationError("give your e-mail address with --email EMAIL")
    if ca_pin is not None:
        from common.pinning import check_pin

        ca_pin = check_pin(ca_pin)
    same = previous is not None and previous.control_plane_url == url
    if ca_file is None and ca_pin is None and same and previous is not None:
        ca_file = Path(previous.ca_file) if previous.ca_file else None
        ca_pin = previous.ca_pin
    store = CredentialStore()  # fail before asking for a password if there is no keyring
    password = os.environ.get("KEYVAULT_PASSWORD") or click.prompt(
        f"Password for {email}", hide_input=True
    )
    session = Session.login(
        url,
        email,
        password,
        ca_file=str(ca_file.resolve()) if ca_file else None,
        store=store,
        ca_pin=ca_pin,
    )
    p = session.profile
    click.echo(f"logged in to {p.control_plane_url} as {p.email} ({p.role}, {p.org_name})")


def _open_browser(url: str) -> None:
    """Open the sign-in page (and print it, for a terminal without a browser)."""
    import webbrowser

    click.echo(f"sign in at: {url}", err=True)
    webbrowser.open(url)


def _login_sso(url: str, org_id: str, ca_file: Path | None, ca_pin: str | None) -> None:
    from apps.core.keyring_store import CredentialStore
    from apps.core.session import Session

    store = CredentialStore()  # fail before the browser if there is no keyring
    session = Session.login_sso(
        url,
        org_id,
        _open_browser,
        ca_file=str(ca_file.resolve()) if ca_file else None,
        store=store,
        ca_pin=ca_pin,
    )
    p = session.profile
    click.echo(f"logged in to {p.control_plane_url} as {p.email} ({p.role}, {p.org_name}) via SSO")


@click.command("logout")
@friendly_errors
def logout_cmd() -> None:
    """Revoke the session on the control plane and forget its token."""
    from apps.core.session import NotLoggedInError

    try:
        session = current_session()
    except NotLoggedInError:
        click.echo("not logged in")
        return
    p = session.profile
    if session.logout():
        click.echo(f"logged out of {p.control_plane_url}")
    else:
        click.echo(
            f"the control plane at {p.control_plane_url} cannot be reached: the session was "
            "forgotten here and expires there on its own",
            err=True,
        )


@click.command("whoami")
@friendly_errors
def whoami_cmd() -> None:
    """Who you are logged in as, where, and whether this keyring holds the metadata key."""
    session = current_session()
    with operator_api(session) as cp:
        me = cp.me()
    user, org = me["user"], me["org"]
    if session.profile.role != user["role"] or session.profile.org_name != org["name"]:
        session.remember(role=user["role"], org_name=org["name"], org_id=org["id"])
    key = session.metadata_key()
    registered = org.get("metadata_key_fingerprint")
    if key is None:
        key_line = "not in this keyring" + ("" if registered else " (none registered)")
    elif key.fingerprint == registered:
        key_line = f"{key.fingerprint} (in this keyring, matches the control plane)"
    else:
        key_line = f"{key.fingerprint} (in this keyring, DOES NOT match the control plane's)"
    click.echo(f"user:          {user['email']} ({user['role']})")
    click.echo(f"organisation:  {org['name']} ({org['id']})")
    click.echo(f"control plane: {session.profile.control_plane_url}")
    click.echo(f"metadata key:  {key_line}")
