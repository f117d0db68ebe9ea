"""``keyvault demo``: the whole product on embedded defaults, in one command."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import click

from apps.cli.demo_stack import AGENTS, OWNER_EMAIL, DemoError, DemoStack
from apps.cli.demo_supervisor import Supervisor, request_restart
from common.cliutil import friendly_errors


def _howto(stack: DemoStack, elapsed: float) -> str:
    """What runs where, the operator's credentials, and commands to try."""
    folder = stack.folder
    agents = "\n".join(f"    {name:<14} {stack.agent_urls[name]}" for name in AGENTS)
    first = AGENTS[0]
    operator = "  .venv/bin/keyvault vaults list\n  .venv/bin/keyvault tui\n"
    if stack.memory_keyring:  # another process cannot see this one's in-memory credentials
        operator = "  .venv/bin/keyvault tui --memory-keyring   (log in with the password above)\n"
    return f"""
  control plane API:  {stack.api_url}
  control plane CA:   {stack.api_tls_dir / "ca.crt"}   (TLS 1.3; log in with --ca-file)
  agent gateway:      {stack.gateway_url}
  agents:
{agents}
  operator e-mail:    {OWNER_EMAIL}
  operator password:  {stack.password}   (also in {stack.password_file})
  data folder:        {folder}   (logs in {folder / "logs"})

Try it from another terminal (the demo's operator profile lives in the data folder):
  export XDG_CONFIG_HOME={folder / "operator"}
{operator}  KEYVAULT_DATA_DIR={stack.agent_dir(first)} \\
  KEYVAULT_TOKEN_FILE={stack.agent_dir(first) / "admin.token"} \\
    .venv/bin/keyvault secrets list

Stop an agent (kill its process) and the demo keeps running: the control plane shows it
offline; start it again with
  .venv/bin/keyvault demo --dir {folder} --restart-agent {first}

The data stays in {folder}; delete the folder to start afresh.
KeyVault demo is ready (started in {elapsed:.1f} s). Press Ctrl+C to stop.
"""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM behaves like Ctrl+C: a clean stop."""
    del signum, frame
    raise KeyboardInterrupt


def _log_to(path: Path) -> Callable[[str], None]:
    """A reporter that appends lines to the demo's own log (the UI owns the terminal)."""

    def report(line: str) -> None:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    return report


def _open_tui(stack: DemoStack) -> None:
    try:
        from apps.tui.app import run_tui
    except ImportError as exc:
        raise DemoError(
            f"the TUI cannot be loaded ({exc}); install it with `scripts/setup.sh all`, "
            "or run `keyvault demo --headless`"
        ) from None
    run_tui(session=stack.session, memory_keyring=stack.memory_keyring)


def _open_desktop(stack: DemoStack) -> None:
    try:
        from apps.desktop.app import run_desktop
    except ImportError as exc:
        raise DemoError(
            f"the desktop app cannot be loaded ({exc}); install it with "
            "`pip install 'keyvault[desktop]'`, or run `keyvault demo --headless`"
        ) from None
    run_desktop(session=stack.session, memory_keyring=stack.memory_keyring)


@click.command("demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".demo"),
    show_default=True,
    help="Folder holding the demo's data (kept between runs).",
)
@click.option(
    "--port-base",
    type=click.IntRange(1024, 65530),
    default=None,
    help="First of four ports: API, gateway, then the two agents (default 8400; a folder "
    "keeps the one it was created with).",
)
@click.option("--headless", is_flag=True, help="No TUI: print URLs and credentials, then wait.")
@click.option("--desktop", is_flag=True, help="Open the desktop app instead of the TUI.")
@click.option(
    "--restart-agent",
    type=click.Choice(AGENTS),
    help="Ask the demo already running on --dir to start this stopped agent again.",
)
@friendly_errors
def demo_cmd(
    folder: Path, port_base: int | None, headless: bool, desktop: bool, restart_agent: str | None
) -> None:
    """Run KeyVault on one machine: a control plane, two agents with sample secrets, and the TUI
    logged in as the demo's owner. An agent that stops shows offline and the demo keeps
    running; --restart-agent NAME (from another terminal) starts it again."""
    if restart_agent:
        pid = request_restart(folder.resolve(), restart_agent)
        click.echo(f"asked the demo (pid {pid}) to restart agent {restart_agent}")
        return
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    stack = DemoStack(folder, port_base)
    supervisor = Supervisor(stack, click.echo if headless else _log_to(stack.folder / "demo.log"))
    try:
        stack.start()
        supervisor.install()
        if headless:
            click.echo(_howto(stack, time.monotonic() - started))
            supervisor.run(stop_with_control_plane=True)
        else:
            watcher = threading.Thread(
                target=supervisor.run, kwargs={"stop_with_control_plane": False}, daemon=True
            )
            watcher.start()
            if desktop:
                _open_desktop(stack)
            else:
                _open_tui(stack)
    except KeyboardInterrupt:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl+C must not orphan children
            signal.signal(sig, signal.SIG_IGN)
        supervisor.uninstall()
        stack.stop()
    click.echo("demo stopped.")
