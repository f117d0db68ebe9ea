"""``keyvault demo``: the product on embedded defaults, in one command."""

from __future__ import annotations

import os
from pathlib import Path

import click

from common.cliutil import friendly_errors


def _init_agent(folder: Path, port: int) -> None:
    from agent.bootstrap import InitOptions, initialise

    click.echo(f"Creating a demo agent in {folder} (SQLite store, generated key file)…")
    result = initialise(InitOptions(folder, port=port))
    token_file = folder / "admin.token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(result.admin_token + "\n")


def _howto(folder: Path, url: str) -> str:
    tls = folder / "tls"
    return f"""
KeyVault demo agent is running at {url}
  data folder: {folder}   (master key: {folder / "master.key"})

Call it from another terminal:
  export KEYVAULT_DATA_DIR={folder}
  export KEYVAULT_TOKEN_FILE={folder / "admin.token"}
  .venv/bin/keyvault secrets put db/password --stdin <<< 's3cret-value'
  .venv/bin/keyvault secrets get db/password
  .venv/bin/keyvault secrets list
  .venv/bin/keyvault run --secret DB_PASSWORD=db/password -- env

or with curl (mutual TLS 1.3 + bearer token):
  curl --cacert {tls / "ca.crt"} --cert {tls / "client.crt"} --key {tls / "client.key"} \\
       -H "Authorization: Bearer $(cat {folder / "admin.token"})" {url}/api/v1/secrets

Press Ctrl+C to stop. The data stays in {folder}; delete the folder to start afresh.
"""


@click.command("demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path),
    default=Path(".demo"),
    show_default=True,
    help="Folder holding the demo's data (kept between runs).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port of the demo agent (0 picks a free one).",
)
@click.option(
    "--headless", is_flag=True, help="Only print how to connect (the default until the TUI lands)."
)
@friendly_errors
def demo_cmd(folder: Path, port: int, headless: bool) -> None:
    """Run KeyVault on embedded defaults: an agent on SQLite with a generated key, ready to call."""
    from agent.cli import load_agent_settings
    from agent.daemon import serve
    from agent.logs import setup_logging
    from common.eventloop import run_event_loop

    del headless
    agent_dir = (folder / "agent").resolve()
    if not (agent_dir / "agent.yaml").exists():
        _init_agent(agent_dir, port)
    settings = load_agent_settings(None, agent_dir, port=port)
    setup_logging("WARNING", "text")
    run_event_loop(serve(settings, on_ready=lambda url: click.echo(_howto(agent_dir, url))))
    click.echo("demo stopped.")
