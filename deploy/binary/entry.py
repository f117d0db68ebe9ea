"""Entry point of the single-file agent binary: ``keyvault-agent init|run|status|secrets …``."""

from __future__ import annotations

import sys

import click

from agent.cli import agent_group
from common.cliutil import run_cli


class _BinaryGroup(click.Group):
    """The agent's commands, plus ``secrets`` imported when it is used (so ``run`` does not
    carry the client commands in the daemon's memory, docs/performance.md)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, loaded or not."""
        return sorted({*self.commands, "secrets"})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, importing ``secrets`` the first time."""
        if cmd_name == "secrets" and cmd_name not in self.commands:
            from apps.cli.secrets_cmd import secrets_group

            self.add_command(secrets_group, "secrets")
        return self.commands.get(cmd_name)


cli = _BinaryGroup(
    "keyvault-agent",
    help="KeyVault agent (single binary): the `keyvault agent` commands plus `secrets`.",
    commands=dict(agent_group.commands),
    context_settings={"help_option_names": ["-h", "--help"]},
)


def main() -> None:
    """Run the binary's command line: errors are one line and an exit code, never a traceback."""
    # the rotation scheduler's policy-evaluation worker (agent/rotation/evaluate.py) is a spawned
    # process: in the frozen binary it re-enters here and must run the worker, not the CLI
    # (freeze_support does nothing unless frozen, so multiprocessing is imported only then)
    if getattr(sys, "frozen", False):
        import multiprocessing

        multiprocessing.freeze_support()
    run_cli(cli, prog_name="keyvault-agent")


if __name__ == "__main__":
    main()
