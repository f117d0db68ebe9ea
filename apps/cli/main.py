"""The ``keyvault`` command: one entry point, a subcommand per part of the product."""

from __future__ import annotations

import importlib

import click

from common.cliutil import run_cli

# command name -> "module:attribute"; a command's module is imported only when that command (or
# the full help) is asked for, so `keyvault agent run` does not carry the control plane's, the
# operator apps' and the TUI's command modules in the daemon (~1.5 MiB idle RSS, see
# docs/performance.md)
LAZY_COMMANDS = {
    "agent": "agent.cli:agent_group",
    "control-plane": "control_plane.cli:control_plane_group",
    "secrets": "apps.cli.secrets_cmd:secrets_group",
    "run": "apps.cli.secrets_cmd:run_cmd",
    "demo": "apps.cli.demo:demo_cmd",
    "login": "apps.cli.session_cmd:login_cmd",
    "logout": "apps.cli.session_cmd:logout_cmd",
    "whoami": "apps.cli.session_cmd:whoami_cmd",
    "org": "apps.cli.org_cmd:org_group",
    "vaults": "apps.cli.vaults_cmd:vaults_group",
    "users": "apps.cli.users_cmd:users_group",
    "policies": "apps.cli.policies_cmd:policies_group",
    "tui": "apps.cli.tui_cmd:tui_cmd",
    "desktop": "apps.cli.desktop_cmd:desktop_cmd",
}


def _load(name: str) -> click.Command:
    module, attr = LAZY_COMMANDS[name].split(":")
    command: click.Command = getattr(importlib.import_module(module), attr)
    if name == "secrets":
        from apps.cli.secrets_io import export_cmd, import_cmd

        if isinstance(command, click.Group) and "import" not in command.commands:
            command.add_command(import_cmd)
            command.add_command(export_cmd)
    return command


class LazyGroup(click.Group):
    """The top-level group: subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, loaded or not."""
        return sorted({*LAZY_COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, importing its module the first time."""
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            self.add_command(_load(cmd_name), cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="keyvault")
def cli() -> None:
    """KeyVault: secrets that stay on your servers, managed from one place.

    Exit codes: 0 ok, 1 error, 2 usage, 64 bad input, 65 data/integrity, 66 not found,
    69 unavailable, 75 already running, 77 denied, 78 configuration.
    """


def main() -> None:
    """Console-script entry point: errors are one line, never a traceback (unless KEYVAULT_DEBUG)."""
    run_cli(cli)


if __name__ == "__main__":
    main()
