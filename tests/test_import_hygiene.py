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
