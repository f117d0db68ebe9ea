"""``keyvault control-plane …``: create the first organisation, migrate, run."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from common.errors import ConfigError, KeyVaultError

if TYPE_CHECKING:  # the heavy modules load only when a command runs, not for --help
    from control_plane.settings import ControlPlaneSettings

CONFIG_HELP = "YAML settings file (values there are overridden by KEYVAULT_CP_… variables)."


def _settings(config: Path | None, **overrides: Any) -> ControlPlaneSettings:
    from control_plane.settings import load_cp_settings

    return load_cp_settings(config, overrides)


def _fail(exc: KeyVaultError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    raise SystemExit(exc.exit_code)


@click.group("control-plane")
def control_plane_group() -> None:
    """Run and administer the KeyVault control plane."""


@control_plane_group.command("migrate")
@click.option("--config", type=click.Path(path_type=Path), help=CONFIG_HELP)
@click.option("--database-url", help="SQLAlchemy async URL (KEYVAULT_CP_DATABASE_URL).")
def migrate_cmd(config: Path | None, database_url: str | None) -> None:
    """Bring the database schema to the newest revision."""

    async def go(settings: ControlPlaneSettings) -> None:
        from control_plane import db

        engine = db.make_engine(settings.database_url)
        try:
            await db.migrate(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(go(_settings(config, database_url=database_url)))
    except KeyVaultError as exc:
        _fail(exc)
    click.echo("database is at the newest revision")


@control_plane_group.command("init")
@click.option("--config", type=click.Path(path_type=Path), help=CONFIG_HELP)
@click.option("--database-url", help="SQLAlchemy async URL (KEYVAULT_CP_DATABASE_URL).")
@click.option("--org", "org_name", required=True, help="Name of the organisation to create.")
@click.option("--email", required=True, help="E-mail address of its owner.")
def init_cmd(config: Path | None, database_url: str | None, org_name: str, email: str) -> None:
    """Create an organisation and its owner (password from KEYVAULT_CP_OWNER_PASSWORD or asked)."""
    password = os.environ.get("KEYVAULT_CP_OWNER_PASSWORD")
    if not password:
        password = click.prompt("Owner password", hide_input=True, confirmation_prompt=True)

    async def go(settings: ControlPlaneSettings) -> dict[str, Any]:
        from control_plane.runtime import open_control_plane

        cp = await open_control_plane(settings)
        try:
            return await cp.accounts.create_org(org_name, email, str(password))
        finally:
            await cp.close()

    try:
        settings = _settings(config, database_url=database_url)
        result = asyncio.run(go(settings.model_copy(update={"redis_url": None})))
    except KeyVaultError as exc:
        _fail(exc)
    click.echo(f"created organisation {result['org_id']} with owner {result['email']}")


@control_plane_group.command("run")
@click.option("--config", type=click.Path(path_type=Path), help=CONFIG_HELP)
@click.option("--bind", help="Address of the operator API (KEYVAULT_CP_BIND).")
@click.option("--port", type=click.IntRange(0, 65535), help="API port (KEYVAULT_CP_PORT).")
@click.option(
    "--gateway-port",
    type=click.IntRange(0, 65535),
    help="Agent gateway port, 0 for any free one (KEYVAULT_CP_GATEWAY_PORT).",
)
@click.option(
    "--ready-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help='Once listening, write {"api_url", "gateway_url"} here as JSON.',
)
def run_cmd(
    config: Path | None,
    bind: str | None,
    port: int | None,
    gateway_port: int | None,
    ready_file: Path | None,
) -> None:
    """Serve the operator API and the agent gateway until SIGTERM/SIGINT."""
    try:
        settings = _settings(config, bind=bind, port=port, gateway_port=gateway_port)
        if settings.ca_passphrase() is None:
            raise ConfigError(
                "no CA key passphrase: set KEYVAULT_CP_CA_KEY_PASSPHRASE or "
                "ca_key_file (KEYVAULT_CP_CA_KEY_FILE); it encrypts every organisation's CA key"
            )
    except KeyVaultError as exc:
        _fail(exc)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    from common.eventloop import run_event_loop
    from control_plane.serve import serve

    try:
        run_event_loop(serve(settings, ready_file=ready_file, echo=click.echo))
    except KeyVaultError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(ConfigError(f"cannot listen: {exc.strerror or exc}"))
