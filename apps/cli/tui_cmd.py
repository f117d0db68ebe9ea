"""``keyvault tui``: the terminal dashboard, resuming the saved session or asking to log in."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from common.cliutil import friendly_errors
from common.errors import ConfigError

if TYPE_CHECKING:
    from apps.core.session import Session


def resume_session(memory_keyring: bool) -> Session | None:
    """The saved session, or None (no profile, no token, or no keyring: the login screen asks)."""
    from apps.core.keyring_store import CredentialStore
    from apps.core.session import Session
    from common.errors import KeyVaultError

    if memory_keyring:
        return None  # a fresh in-memory store holds no token yet
    try:
        return Session.current(CredentialStore())
    except KeyVaultError:
        return None


#: the one explicit weaker credential store, shared by `keyvault tui` and `keyvault desktop`
MEMORY_KEYRING = click.option(
    "--memory-keyring",
    is_flag=True,
    help="Keep the session token and keys in memory only (forgotten on exit), for hosts "
    "without an OS keyring.",
)


@click.command("tui")
@MEMORY_KEYRING
@friendly_errors
def tui_cmd(memory_keyring: bool) -> None:
    """Open the terminal dashboard: vaults, alerts, policies, usage, audit log and secrets."""
    try:
        from apps.tui.app import run_tui
    except ImportError as exc:
        raise ConfigError(
            f"the TUI cannot be loaded ({exc}); install it with `pip install 'keyvault[tui]'`"
        ) from None
    run_tui(session=resume_session(memory_keyring), memory_keyring=memory_keyring)
