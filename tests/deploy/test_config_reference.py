"""docs/configuration.md is generated from the settings models and can never go stale."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import BaseModel

from agent.settings import AgentSettings
from common.typedconf import Model
from control_plane.settings import ControlPlaneSettings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_config_reference.py"
DOC = ROOT / "docs" / "configuration.md"


def load_generator() -> ModuleType:
    """The generator script as a module."""
    spec = importlib.util.spec_from_file_location("gen_config_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def is_model(ann: Any) -> bool:
    """A settings model: pydantic's (control plane) or common.typedconf's (agent)."""
    return isinstance(ann, type) and issubclass(ann, BaseModel | Model)


def leaf_keys(model: Any, prefix: str = "") -> list[str]:
    """Every field's dotted key, nested models (and mappings of them) flattened."""
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if is_model(ann):
            keys += leaf_keys(ann, f"{prefix}{name}.")
            continue
        keys.append(prefix + name)
        args = typing.get_args(ann)
        if len(args) == 2 and is_model(args[1]):
            keys += leaf_keys(args[1], f"{prefix}{name}.<name>.")
    return keys


def test_committed_reference_matches_a_fresh_generation(tmp_path: Path) -> None:
    out = tmp_path / "configuration.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == DOC.read_text(encoding="utf-8"), (
        "docs/configuration.md is stale: run python scripts/gen_config_reference.py"
    )
    again = subprocess.run([sys.executable, str(SCRIPT), "--output", str(out), "--check"])
    assert again.returncode == 0


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("# outdated\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(stale), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "stale" in done.stdout
    assert stale.read_text(encoding="utf-8") == "# outdated\n"


def program_rows(title: str) -> dict[str, str]:
    """The table rows of one program's part of the document, by key."""
    text = DOC.read_text(encoding="utf-8")
    part = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return {
        line.split(" | ")[0].removeprefix("| ").strip("`"): line
        for line in part.splitlines()
        if line.startswith("| `")
    }


def test_every_field_of_both_models_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for title, model in (("Agent", AgentSettings), ("Control plane", ControlPlaneSettings)):
        rows = program_rows(title)
        keys = leaf_keys(model)
        assert keys
        for key in keys:
            assert key in rows, f"{title} setting {key} is missing from docs/configuration.md"
    assert "rotation.postgres.<name>.dsn_file" in leaf_keys(AgentSettings)
    for section in ("tls", "storage", "uplink", "rotation", "rotation.commands.<name>"):
        assert f"### Agent: `{section}`" in text


def test_environment_names_descriptions_and_defaults() -> None:
    gen = load_generator()
    rows = program_rows("Agent")
    cp_rows = program_rows("Control plane")
    seed = rows["master_key_file"]
    assert "`VAULT_MASTER_KEY_FILE`" in seed and "`KEYVAULT_MASTER_KEY_FILE`" in seed
    assert "`CONTROL_PLANE_URL`" in rows["control_plane_url"]
    assert "`KEYVAULT_TLS__CLIENT_CERT`" in rows["tls.client_cert"]
    assert "`KEYVAULT_CP_GATEWAY_PORT`" in cp_rows["gateway_port"]
    assert "`8444`" in cp_rows["gateway_port"] and "`8443`" in cp_rows["port"]
    assert "`8080`" in rows["port"] and "≤ 65535" in rows["port"]
    assert "required" in rows["rotation.commands.<name>.argv"]
    for model, table in ((AgentSettings, rows), (ControlPlaneSettings, cp_rows)):
        for name, field in model.model_fields.items():
            if field.description and name in table:
                assert gen.cell(field.description) in table[name], name
    names = gen.all_env_names()
    assert {"KEYVAULT_CP_DATABASE_URL", "VAULT_MASTER_KEY_FILE", "KEYVAULT_APP_DIR"} <= names
