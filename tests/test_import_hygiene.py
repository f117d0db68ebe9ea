"""The inner layers load no UI toolkit and no server framework, checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = (
    "textual",
    "PySide6",
    "aiohttp",
    "sqlalchemy",
    "agent",
    "control_plane",
    "apps.tui",
    "apps.desktop",
)


@pytest.mark.parametrize(
    "modules",
    [
        [
            "common",
            "common.tls",
            "common.settings",
            "common.client",
            "common.errors",
            "common.cliutil",
        ],
        ["apps.core"],
    ],
)
def test_inner_layers_import_nothing_outward(modules: list[str]) -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == []


def test_agent_start_path_stays_lean() -> None:
    """`keyvault agent run` must not load the HTTP client or Alembic (idle memory)."""
    code = (
        "import json, sys\n"
        "import apps.cli.main, agent.serve, agent.api.app, agent.assembly\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    assert not {"httpx", "alembic", "textual", "PySide6"} & loaded


def test_agent_run_loads_no_jwt_postgres_dialect_or_other_commands() -> None:
    """What `keyvault agent run` imports on SQLite without JWT login: not PyJWT, not SQLAlchemy's
    PostgreSQL dialect, not the control plane's or the operator apps' command modules (each
    ~1.5 MiB of idle RSS, docs/performance.md)."""
    code = (
        "import json, sys\n"
        "import click\n"
        "from apps.cli.main import cli\n"
        "ctx = click.Context(cli)\n"
        "agent = cli.get_command(ctx, 'agent')\n"
        "agent.get_command(ctx, 'run')\n"
        "import agent.serve, agent.api.app, agent.assembly\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    unwanted = ("jwt", "sqlalchemy.dialects.postgresql", "control_plane", "apps.cli.org_cmd")
    assert [m for m in loaded if any(m == u or m.startswith(u + ".") for u in unwanted)] == []


def test_the_lazy_cli_still_has_every_command() -> None:
    """Loading subcommands on use changes nothing a user sees: every command resolves, and
    `secrets` still carries `import` and `export`."""
    import click

    from apps.cli.main import LAZY_COMMANDS, cli

    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(LAZY_COMMANDS)
    for name in LAZY_COMMANDS:
        assert cli.get_command(ctx, name) is not None, name
    secrets = cli.get_command(ctx, "secrets")
    assert isinstance(secrets, click.Group)
    assert {"import", "export", "put", "get"} <= set(secrets.commands)
    assert cli.get_command(ctx, "no-such-command") is None
