"""The typed-settings loader for pydantic models (the control plane's), and one ``load_settings``.

Each program defines its own models: the control plane's in :mod:`control_plane.settings`
(pydantic), the agent's in :mod:`agent.settings` (:mod:`common.typedconf`, standard library
only, so that a running agent never imports pydantic). :func:`load_settings` loads either kind;
the YAML reading, merging and error lines are :mod:`common.typedconf`'s, shared by both.

Precedence, highest first: explicit overrides (command-line flags), environment variables
(``KEYVAULT_`` prefix, ``__`` for nesting, e.g. ``KEYVAULT_TLS__CLIENT_CERT=required``; the
seed's ``VAULT_MASTER_KEY_FILE`` and ``CONTROL_PLANE_URL`` are honoured too), the YAML file,
then defaults. A bad value stops start-up with a :class:`~common.errors.ConfigError` that names
the key, the environment variable, and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource

from common import typedconf
from common.errors import ConfigError
from common.typedconf import ENV_PREFIX, describe_errors, merge, read_yaml

__all__ = ["ENV_PREFIX", "describe_validation_error", "load_settings", "read_yaml"]

S = TypeVar("S", bound=BaseModel | typedconf.Model)


def describe_validation_error(exc: PydanticValidationError, *, prefix: str = ENV_PREFIX) -> str:
    """One line per bad setting: key, its environment variable, and the problem."""
    return describe_errors([dict(e) for e in exc.errors()], prefix=prefix)


def load_settings(
    cls: type[S], config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> S:
    """Build ``cls`` from defaults < YAML file < environment < overrides, or raise ConfigError."""
    if issubclass(cls, typedconf.Model):
        return typedconf.load_settings(cls, config_file, overrides)
    assert issubclass(cls, BaseSettings), cls
    file_values = read_yaml(config_file) if config_file else {}
    flag_values = {k: v for k, v in (overrides or {}).items() if v is not None}
    prefix = str(cls.model_config.get("env_prefix") or ENV_PREFIX)
    try:
        settings = _build(cls, file_values, flag_values)
    except PydanticValidationError as exc:
        raise ConfigError(describe_validation_error(exc, prefix=prefix)) from None
    return settings


def _build(cls: type[BaseSettings], file_values: dict[str, Any], flags: dict[str, Any]) -> Any:
    env_values = _env_values(cls)
    merged = merge(merge(file_values, env_values), flags)
    return cls.model_validate(merged)


def _env_values(cls: type[BaseSettings]) -> dict[str, Any]:
    """The values the environment sets, as a nested mapping (read through pydantic-settings)."""
    source = EnvSettingsSource(cls)
    values: dict[str, Any] = source()
    return values
