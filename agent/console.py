"""``keyvault`` as the agent image installs it: only the ``keyvault agent …`` commands.

The full ``keyvault`` command (apps/cli/main.py) also carries the operator CLI, which the agent
image leaves out; the pods the Kubernetes operator renders run ``keyvault agent init|enroll|run``
in that image, so the same words work there.
"""

from __future__ import annotations

import click

from agent.cli import agent_group
from common.cliutil import run_cli

cli = click.Group(
    "keyvault",
    help="KeyVault (agent image): the `keyvault agent` commands.",
    commands={"agent": agent_group},
    context_settings={"help_option_names": ["-h", "--help"]},
)


def main() -> None:
    """Run ``keyvault agent …``: errors are one line and an exit code, never a traceback."""
    run_cli(cli, prog_name="keyvault")


if __name__ == "__main__":
    main()
