"""The typed-settings loader: a YAML file plus ``KEYVAULT_…`` environment variables, validated once.

Each program defines its own models (the agent's in :mod:`agent.settings`, the control
plane's in :mod:`control_plane.settings`) and loads them with :func:`load_settings`.

Precedence, highest first: explicit overrides (command-line flags), environment variables
(``KEYVAULT_`` prefix, ``__`` for nesting, e.g. ``KEYVAULT_TLS__CLIENT_CERT=required``; the
seed's ``VAULT_MASTER_KEY_FILE`` and ``CONTROL_PLANE_URL`` are honoured too), the YAML file,
then defaults. A bad value stops start-up with a :class:`~common.errors.ConfigError` that names
the key, the environment variable, and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource

from common.errors import ConfigError

ENV_PREFIX = "KEYVAULT_"
S = TypeVar("S", bound=BaseSettings)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML settings file into a mapping, with clear errors."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings at the top level")
    return doc


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def describe_validation_error(exc: PydanticValidationError, *, prefix: str = ENV_PREFIX) -> str:
    """One line per bad setting: key, its environment variable, and the problem."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if p != "__root__"]
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:
            lines.append(f"invalid settings: {msg}")
            continue
        env = prefix + "__".join(loc).upper()
        lines.append(f"invalid setting {'.'.join(loc)} ({env}): {msg}")
    return "; ".join(lines)


def load_settings(
    cls: type[S], config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> S:
    """Build ``cls`` from defaults < YAML file < environment < overrides, or raise ConfigError."""
    file_values = read_yaml(config_file) if config_file else {}
    flag_values = {k: v for k, v in (overrides or {}).items() if v is not None}
    prefix = str(cls.model_config.get("env_prefix") or ENV_PREFIX)
    try:
        settings = _build(cls, file_values, flag_values)
    except PydanticValidationError as exc:
        raise ConfigError(describe_validation_error(exc, prefix=prefix)) from None
    return settings


def _build(cls: type[S], file_values: dict[str, Any], flags: dict[str, Any]) -> S:
    env_values = _env_values(cls)
    merged = _merge(_merge(file_values, env_values), flags)
    return cls.model_validate(merged)


def _env_values(cls: type[BaseSettings]) -> dict[str, Any]:
    """The values the environment sets, as a nested mapping (read through pydantic-settings)."""
    source = EnvSettingsSource(cls)
    values: dict[str, Any] = source()
    return values
