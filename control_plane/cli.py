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
@click.option(
    "--tls-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Also issue the operator API a TLS certificate from the service CA into this folder "
    "(api.crt, api.key, ca.crt for clients).",
)
@click.option(
    "--api-name",
    "api_names",
    multiple=True,
    help="DNS name or IP address operators use to reach the API (repeatable; with --tls-dir; "
    "default: localhost, 127.0.0.1, ::1).",
)
def init_cmd(
    config: Path | None,
    database_url: str | None,
    org_name: str,
    email: str,
    tls_dir: Path | None,
    api_names: tuple[str, ...],
) -> None:
    """Create an organisation and its owner (password from KEYVAULT_CP_OWNER_PASSWORD or asked)."""
    password = os.environ.get("KEYVAULT_CP_OWNER_PASSWORD")
    if not password:
        password = click.prompt("Owner password", hide_input=True, confirmation_prompt=True)

    async def go(settings: ControlPlaneSettings) -> tuple[dict[str, Any], Any]:
        from control_plane.api_tls import issue_api_certificate
        from control_plane.runtime import open_control_plane

        cp = await open_control_plane(settings)
        try:
            result = await cp.accounts.create_org(org_name, email, str(password))
            issued = None
            if tls_dir is not None:
                names = list(api_names) or list(DEFAULT_API_NAMES)
                issued = await issue_api_certificate(cp, names)
            return result, issued
        finally:
            await cp.close()

    try:
        settings = _settings(config, database_url=database_url)
        result, issued = asyncio.run(go(settings.model_copy(update={"redis_url": None})))
        files = None
        if tls_dir is not None:
            from control_plane.api_tls import write_api_tls

            files = write_api_tls(tls_dir, issued)
    except KeyVaultError as exc:
        _fail(exc)
    click.echo(f"created organisation {result['org_id']} with owner {result['email']}")
    if files is not None:
        _echo_tls(files)


DEFAULT_API_NAMES = ("localhost", "127.0.0.1", "::1")


def _echo_tls(files: Any) -> None:
    click.echo(f"operator API certificate: {files.cert_file} (key {files.key_file})")
    click.echo(
        f"serve it with KEYVAULT_CP_TLS_CERT_FILE={files.cert_file} "
        f"KEYVAULT_CP_TLS_KEY_FILE={files.key_file}"
    )
    click.echo(f"operators log in with --ca-file {files.ca_file} or --ca-pin {files.pin}")


@control_plane_group.command("api-cert")
@click.option("--config", type=click.Path(path_type=Path), help=CONFIG_HELP)
@click.option("--database-url", help="SQLAlchemy async URL (KEYVAULT_CP_DATABASE_URL).")
@click.option(
    "--tls-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder for api.crt, api.key and ca.crt.",
)
@click.option(
    "--api-name",
    "api_names",
    multiple=True,
    help="DNS name or IP address of the API (repeatable; default: localhost, 127.0.0.1, ::1).",
)
def api_cert_cmd(
    config: Path | None, database_url: str | None, tls_dir: Path, api_names: tuple[str, ...]
) -> None:
    """Issue (or renew) the operator API's TLS certificate from the service CA."""

    async def go(settings: ControlPlaneSettings) -> Any:
        from control_plane.api_tls import issue_api_certificate
        from control_plane.runtime import open_control_plane

        cp = await open_control_plane(settings)
        try:
            names = list(api_names) or list(DEFAULT_API_NAMES)
            return await issue_api_certificate(cp, names)
        finally:
            await cp.close()

    try:
        from control_plane.api_tls import write_api_tls

        settings = _settings(config, database_url=database_url)
        issued = asyncio.run(go(settings.model_copy(update={"redis_url": None})))
        files = write_api_tls(tls_dir, issued)
    except KeyVaultError as exc:
        _fail(exc)
    _echo_tls(files)


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
    "--tls-cert-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM certificate of the API (KEYVAULT_CP_TLS_CERT_FILE).",
)
@click.option(
    "--tls-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM key of the API (KEYVAULT_CP_TLS_KEY_FILE).",
)
@click.option(
    "--tls-proxy",
    is_flag=True,
    default=None,
    help="A TLS-terminating proxy sits in front: allow plain HTTP off loopback "
    "(KEYVAULT_CP_TLS_PROXY).",
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
    tls_cert_file: Path | None,
    tls_key_file: Path | None,
    tls_proxy: bool | None,
    ready_file: Path | None,
) -> None:
    """Serve the operator API (TLS 1.3; plain HTTP only on loopback or behind --tls-proxy)
    and the agent gateway until SIGTERM/SIGINT."""
    try:
        settings = _settings(
            config,
            bind=bind,
            port=port,
            gateway_port=gateway_port,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            tls_proxy=tls_proxy,
        )
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
