"""What every ``keyvault`` command shares: connection options, errors as one line, exit codes."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from common.errors import ConfigError, KeyVaultError, UnavailableError

if TYPE_CHECKING:
    from common.client import AgentClient, ClientConfig

F = TypeVar("F", bound=Callable[..., Any])


def fail(exc: KeyVaultError) -> None:
    """Print one clear line to stderr and exit with the error's code."""
    click.echo(f"error: {exc.message}", err=True)
    sys.exit(exc.exit_code)


def run_cli(group: click.Group, prog_name: str | None = None) -> None:
    """Run a command line: errors are one line and an exit code, never a traceback (unless
    ``KEYVAULT_DEBUG``); the ``keyvault`` command and the single agent binary both use it."""
    try:
        group.main(prog_name=prog_name, standalone_mode=False)
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
        click.echo(
            f"internal error: {type(exc).__name__}: {exc} (set KEYVAULT_DEBUG=1 for details)",
            err=True,
        )
        sys.exit(70)


def friendly_errors(fn: F) -> F:
    """Turn KeyVault errors into one line and an exit code; never a traceback for them."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyVaultError as exc:
            fail(exc)

    return wrapper  # type: ignore[return-value]


def agent_options(fn: F) -> F:
    """``--data-dir/--url/--ca-file/--cert/--key/--token-file`` for commands that call an agent."""
    opts = [
        click.option(
            "--data-dir",
            type=click.Path(path_type=Path),
            envvar="KEYVAULT_DATA_DIR",
            help="An agent's data folder on this host: its URL and TLS files are used.",
        ),
        click.option(
            "--url", envvar="KEYVAULT_AGENT_URL", help="Agent URL, e.g. https://vault:8080."
        ),
        click.option(
            "--ca-file",
            type=click.Path(path_type=Path),
            envvar="KEYVAULT_CA_FILE",
            help="CA that signed the agent's certificate.",
        ),
        click.option(
            "--cert",
            type=click.Path(path_type=Path),
            envvar="KEYVAULT_CLIENT_CERT",
            help="Client certificate (mutual TLS).",
        ),
        click.option(
            "--key",
            type=click.Path(path_type=Path),
            envvar="KEYVAULT_CLIENT_KEY",
            help="Client certificate's private key.",
        ),
        click.option(
            "--token-file",
            type=click.Path(path_type=Path),
            envvar="KEYVAULT_TOKEN_FILE",
            help="File holding the bearer token (or set KEYVAULT_TOKEN).",
        ),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def client_config(
    data_dir: Path | None,
    url: str | None,
    ca_file: Path | None,
    cert: Path | None,
    key: Path | None,
    token_file: Path | None,
) -> ClientConfig:
    """Resolve connection settings: flags and env first, then the data folder's files."""
    if data_dir is not None:
        tls = data_dir / "tls"
        if url is None:
            url_file = data_dir / "agent.url"
            if not url_file.exists():
                raise UnavailableError(
                    f"no agent is running on {data_dir} (no agent.url): start it with "
                    f"`keyvault agent run --data-dir {data_dir}`, or give --url"
                )
            url = url_file.read_text(encoding="utf-8").strip()
        ca_file = ca_file or _existing(tls / "ca.crt")
        cert = cert or _existing(tls / "client.crt")
        key = key or _existing(tls / "client.key")
    if not url:
        raise ConfigError("no agent given: pass --url (or KEYVAULT_AGENT_URL) or --data-dir")
    token = os.environ.get("KEYVAULT_TOKEN")
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"token file {token_file} cannot be read: {exc.strerror}") from None
    if not token:
        raise ConfigError("no token: set KEYVAULT_TOKEN or pass --token-file")
    from common.client import ClientConfig

    return ClientConfig(url, token, ca_file, cert, key)


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def make_client(cfg: ClientConfig) -> AgentClient:
    """A blocking agent client for a resolved configuration (httpx is loaded only here)."""
    from common.client import AgentClient

    return AgentClient(
        cfg.url, cfg.token, ca_file=cfg.ca_file, cert_file=cfg.cert_file, key_file=cfg.key_file
    )
