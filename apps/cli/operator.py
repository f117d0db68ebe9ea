"""What the operator commands share: the current session, the API client, tables, waiting.

The HTTP client and the keyring load only when a command runs, so ``keyvault agent run`` and
``--help`` stay lean.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from common.errors import AuthenticationError, UnavailableError

if TYPE_CHECKING:
    from apps.core.session import Session
    from common.cpclient import ControlPlaneClient


class SessionExpiredError(AuthenticationError):
    """The control plane no longer accepts the stored session token."""

    code = "session_expired"


class WaitTimeoutError(UnavailableError):
    """A command did not finish within ``--timeout``."""

    code = "wait_timeout"
    exit_code = 75  # EX_TEMPFAIL


def current_session() -> Session:
    """The saved profile and its token from the keyring (NotLoggedInError otherwise)."""
    from apps.core.session import Session

    return Session.current()


@contextmanager
def operator_api(session: Session) -> Iterator[ControlPlaneClient]:
    """A client for the session; a refused token becomes a 'log in again' message."""
    with session.client() as cp:
        try:
            yield cp
        except AuthenticationError as exc:
            if exc.code != "unauthenticated":
                raise
            raise SessionExpiredError(
                f"your session at {session.profile.control_plane_url} has expired or was "
                f"revoked; run `{session.profile.login_hint()}`"
            ) from None


def echo_json(doc: Any) -> None:
    """Print a document as indented JSON."""
    click.echo(json.dumps(doc, indent=2, sort_keys=True))


def cell(value: Any) -> str:
    """A value as a table cell ('-' for nothing)."""
    if value is None or value == "":
        return "-"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(t.ljust(widths[i]) for i, t in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


SPINNER = "|/-\\"


def wait_for(
    fetch: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
    *,
    what: str,
    timeout: float,
    interval: float = 0.5,
) -> dict[str, Any]:
    """Poll ``fetch`` until ``done``; a spinner on a terminal's stderr; WaitTimeoutError after ``timeout``."""
    show = sys.stderr.isatty()
    start = time.monotonic()
    turn = 0
    try:
        while True:
            doc = fetch()
            if done(doc):
                return doc
            elapsed = time.monotonic() - start
            if elapsed >= timeout:
                raise WaitTimeoutError(
                    f"{what} is still {doc.get('state', 'running')} after {timeout:g} s "
                    "(is the vault online?); check again later with "
                    f"`keyvault vaults command {doc.get('id', '')}`"
                )
            if show:
                state = doc.get("state", "")
                click.echo(
                    f"\r{SPINNER[turn % len(SPINNER)]} {what}: {state} ({elapsed:.0f} s)",
                    err=True,
                    nl=False,
                )
                turn += 1
            time.sleep(min(interval, max(0.0, timeout - elapsed)))
    finally:
        if show:
            click.echo("\r\033[K", err=True, nl=False)
