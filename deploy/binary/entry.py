"""Entry point of the single-file agent binary: ``keyvault-agent init|run|status|secrets …``."""

from __future__ import annotations

import multiprocessing

import click

from agent.cli import agent_group
from apps.cli.secrets_cmd import secrets_group
from common.cliutil import run_cli

cli = click.Group(
    "keyvault-agent",
    help="KeyVault agent (single binary): the `keyvault agent` commands plus `secrets`.",
    commands={**agent_group.commands, "secrets": secrets_group},
    context_settings={"help_option_names": ["-h", "--help"]},
)


def main() -> None:
    """Run the binary's command line: errors are one line and an exit code, never a traceback."""
    # the rotation scheduler's policy-evaluation worker (agent/rotation/evaluate.py) is a spawned
    # process: in the frozen binary it re-enters here and must run the worker, not the CLI
    multiprocessing.freeze_support()
    run_cli(cli, prog_name="keyvault-agent")


if __name__ == "__main__":
    main()
