"""``keyvault desktop``: the desktop app, resuming the saved session or asking to log in."""

from __future__ import annotations

import sys

import click

from apps.cli.tui_cmd import MEMORY_KEYRING, resume_session
from common.cliutil import friendly_errors
from common.errors import ConfigError


@click.command("desktop")
@MEMORY_KEYRING
@friendly_errors
def desktop_cmd(memory_keyring: bool) -> None:
    """Open the desktop app: vaults, alerts, policies, usage, audit log and secrets."""
    try:
        from apps.desktop.app import run_desktop
    except ImportError as exc:
        raise ConfigError(
            f"the desktop app cannot be loaded ({exc}); install it with "
            "`pip install 'keyvault[desktop]'`"
        ) from None
    sys.exit(run_desktop(session=resume_session(memory_keyring), memory_keyring=memory_keyring))
