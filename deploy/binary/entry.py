"""Entry point of the single-file agent binary: ``keyvault-agent init|run|status|secrets …``."""

from __future__ import annotations

import os
import sys

import click

from agent.cli import agent_group
from apps.cli.secrets_cmd import secrets_group
from common.errors import KeyVaultError

cli = click.Group(
    "keyvault-agent",
    help="KeyVault agent (single binary): the `keyvault agent` commands plus `secrets`.",
    commands={**agent_group.commands, "secrets": secrets_group},
    context_settings={"help_option_names": ["-h", "--help"]},
)


def main() -> None:
    """Run the binary's command line: errors are one line and an exit code, never a traceback."""
    try:
        cli.main(prog_name="keyvault-agent", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyVaultError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("KEYVAULT_DEBUG"):
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(70)


if __name__ == "__main__":
    main()
