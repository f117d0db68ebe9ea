"""The ``keyvault`` command: one entry point, a subcommand per part of the product."""

from __future__ import annotations

import click

from agent.cli import agent_group
from apps.cli.demo import demo_cmd
from apps.cli.desktop_cmd import desktop_cmd
from apps.cli.org_cmd import org_group
from apps.cli.policies_cmd import policies_group
from apps.cli.secrets_cmd import run_cmd, secrets_group
from apps.cli.secrets_io import export_cmd, import_cmd
from apps.cli.session_cmd import login_cmd, logout_cmd, whoami_cmd
from apps.cli.tui_cmd import tui_cmd
from apps.cli.users_cmd import users_group
from apps.cli.vaults_cmd import vaults_group
from common.cliutil import run_cli
from control_plane.cli import control_plane_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="keyvault")
def cli() -> None:
    """KeyVault: secrets that stay on your servers, managed from one place.

    Exit codes: 0 ok, 1 error, 2 usage, 64 bad input, 65 data/integrity, 66 not found,
    69 unavailable, 75 already running, 77 denied, 78 configuration.
    """


cli.add_command(agent_group)
cli.add_command(control_plane_group)
secrets_group.add_command(import_cmd)
secrets_group.add_command(export_cmd)
cli.add_command(secrets_group)
cli.add_command(run_cmd)
cli.add_command(demo_cmd)
cli.add_command(login_cmd)
cli.add_command(logout_cmd)
cli.add_command(whoami_cmd)
cli.add_command(org_group)
cli.add_command(vaults_group)
cli.add_command(users_group)
cli.add_command(policies_group)
cli.add_command(tui_cmd)
cli.add_command(desktop_cmd)


def main() -> None:
    """Console-script entry point: errors are one line, never a traceback (unless KEYVAULT_DEBUG)."""
    run_cli(cli)


if __name__ == "__main__":
    main()
