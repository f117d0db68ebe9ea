"""``keyvault agent install-service`` and ``keyvault agent windows-service …``."""

from __future__ import annotations

from pathlib import Path

import click

from common.cliutil import friendly_errors
from common.errors import ConfigError


@click.command("install-service")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="KEYVAULT_DATA_DIR",
    default=Path("/var/lib/keyvault"),
    show_default=True,
    help="The initialised data folder the service serves (the only place it may write).",
)
@click.option(
    "--user", default="keyvault", show_default=True, help="Account it runs as (created if missing)."
)
@click.option("--name", default="keyvault-agent", show_default=True, help="Unit name.")
@click.option(
    "--unit-dir",
    type=click.Path(path_type=Path),
    default=Path("/etc/systemd/system"),
    show_default=True,
    help="Where the unit file is written.",
)
@click.option("--dry-run", is_flag=True, help="Print the unit and change nothing.")
@click.option("--enable", is_flag=True, help="Then run systemctl daemon-reload and enable --now.")
@friendly_errors
def install_service_cmd(
    data_dir: Path, user: str, name: str, unit_dir: Path, dry_run: bool, enable: bool
) -> None:
    """Write a hardened systemd unit that runs this agent (a dedicated user, read-only system)."""
    from agent import CONFIG_NAME
    from agent.service import agent_command, is_frozen
    from agent.service import systemd as sd
    from agent.settings import load_agent_settings

    data = data_dir.resolve()
    initialised = (data / CONFIG_NAME).is_file()
    if not initialised and not dry_run:
        raise ConfigError(
            f"{data} holds no agent: run `keyvault agent init --data-dir {data}` first"
        )
    settings = load_agent_settings(None, data)
    reads = (settings.cert_path, settings.key_path)
    opts = sd.UnitOptions(
        agent_command(data),
        data,
        user,
        settings.shutdown_timeout,
        reads,
        key_file=settings.master_key_file,  # handed over with LoadCredential=
        frozen=is_frozen(),
    )
    text = sd.render_unit(opts)
    if dry_run:
        click.echo(text, nl=False)
        return
    account = sd.ensure_user(user, data)
    if not sd.own_data_dir(data, account):
        click.echo(
            f"warning: {data} is not owned by {user}; run: chown -R {user}: {data}", err=True
        )
    path = sd.write_unit(text, unit_dir, name)
    click.echo(f"wrote {path} (runs as {user}, may write only {data})")
    if enable:
        sd.enable(name)
        click.echo(f"{name} enabled and started; logs: journalctl -u {name}")
    else:
        click.echo(f"start it with: systemctl daemon-reload && systemctl enable --now {name}")


@click.group("windows-service")
def windows_service_group() -> None:
    """Install, remove, start and stop the agent as a Windows service (Windows only)."""


@windows_service_group.command("install")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="KEYVAULT_DATA_DIR",
    help="The initialised data folder (default %ProgramData%\\KeyVault).",
)
@friendly_errors
def win_install(data_dir: Path | None) -> None:
    """Register the service: automatic start, restart on failure."""
    from agent.service import windows

    name = windows.install(data_dir or windows.default_data_dir())
    click.echo(f"service {name} installed; start it with `keyvault agent windows-service start`")


@windows_service_group.command("remove")
@friendly_errors
def win_remove() -> None:
    """Unregister the service."""
    from agent.service import windows

    windows.remove()
    click.echo(f"service {windows.SERVICE_NAME} removed")


@windows_service_group.command("start")
@friendly_errors
def win_start() -> None:
    """Start the service and wait until it runs."""
    from agent.service import windows

    windows.start()
    click.echo(f"service {windows.SERVICE_NAME} running")


@windows_service_group.command("stop")
@friendly_errors
def win_stop() -> None:
    """Stop the service gracefully and wait until it has stopped."""
    from agent.service import windows

    windows.stop()
    click.echo(f"service {windows.SERVICE_NAME} stopped")


@windows_service_group.command("host", hidden=True)
@click.option("--data-dir", type=click.Path(path_type=Path), required=True)
@friendly_errors
def win_host(data_dir: Path) -> None:
    """Run as the service (started by the service control manager, not by people)."""
    from agent.service import windows

    windows.host(data_dir)
