"""The operator client layer stays lean and UI-free, checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys


def _loaded(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def _under(loaded: set[str], *roots: str) -> list[str]:
    return sorted(m for m in loaded if any(m == r or m.startswith(r + ".") for r in roots))


def test_core_and_client_load_no_ui_toolkit_or_server() -> None:
    loaded = _loaded(
        "import apps.core.session, apps.core.labels, apps.core.keyring_store, common.cpclient"
    )
    assert (
        _under(loaded, "textual", "PySide6", "aiohttp", "sqlalchemy", "agent", "control_plane")
        == []
    )


def test_the_cli_loads_http_and_keyring_only_when_a_command_runs() -> None:
    loaded = _loaded("import apps.cli.main")
    assert _under(loaded, "httpx", "keyring", "secretstorage", "jeepney") == []
