"""Rotators: make a new value, apply it to the outside world, verify it, and undo it.

The contract is ``docs/rotation.md``. :func:`build_rotator` turns a policy's ``rotator`` block
into a :class:`Rotator`; every failure is a :class:`RotationError` whose ``reason`` is one of
the fixed codes below (the only text that goes upstream). Messages and reprs never hold a value.
"""

from __future__ import annotations

from typing import Any

from agent.rotation import limits
from agent.rotation._base import (
    AUTHENTICATION_FAILED,
    COMMAND_FAILED,
    COMMAND_NOT_CONFIGURED,
    COMMAND_TIMEOUT,
    CONNECTION_NOT_CONFIGURED,
    DATABASE_UNREACHABLE,
    INTERNAL_ERROR,
    INTERRUPTED,
    INVALID_SETTINGS,
    NOT_ALLOWED,
    REASONS,
    VERIFICATION_FAILED,
    RotationError,
    Rotator,
    SecretRef,
)
from agent.rotation._command import CommandRotator
from agent.rotation._random import Generator, RandomRotator
from agent.settings import RotationSettings

__all__ = [
    "AUTHENTICATION_FAILED",
    "COMMAND_FAILED",
    "COMMAND_NOT_CONFIGURED",
    "COMMAND_TIMEOUT",
    "CONNECTION_NOT_CONFIGURED",
    "DATABASE_UNREACHABLE",
    "INTERNAL_ERROR",
    "INTERRUPTED",
    "INVALID_SETTINGS",
    "NOT_ALLOWED",
    "REASONS",
    "VERIFICATION_FAILED",
    "CommandRotator",
    "Generator",
    "RandomRotator",
    "RotationError",
    "Rotator",
    "SecretRef",
    "build_rotator",
]


def build_rotator(
    rotator: dict[str, Any], settings: RotationSettings, secret: SecretRef
) -> Rotator:
    """The rotator a policy's ``rotator`` block (``{"type", "settings"}``) describes.

    Raises ``RotationError`` with ``invalid_settings`` for a malformed block, and
    ``connection_not_configured`` / ``command_not_configured`` when it names a connection or
    command missing from this agent's ``rotation`` settings.
    """
    if not isinstance(rotator, dict):
        raise RotationError(INVALID_SETTINGS, "rotator must be a mapping")
    params = rotator.get("settings") or {}
    if not isinstance(params, dict):
        raise RotationError(INVALID_SETTINGS, "rotator.settings must be a mapping")
    kind = rotator.get("type")
    if kind == "random":
        return RandomRotator(params)
    if kind == "postgres":
        name = params.get("connection")
        if not isinstance(name, str):
            raise RotationError(INVALID_SETTINGS, "connection must be a name")
        connection = settings.postgres.get(name)
        if connection is None:
            raise RotationError(CONNECTION_NOT_CONFIGURED, f"no rotation.postgres.{name[:40]}")
        refused = limits.postgres_refusal(params, connection)
        if refused is not None:
            raise RotationError(NOT_ALLOWED, refused)
        from agent.rotation._postgres import PostgresRotator  # psycopg only when used

        return PostgresRotator(params, connection, name)
    if kind == "command":
        name = params.get("command")
        if not isinstance(name, str):
            raise RotationError(INVALID_SETTINGS, "command must be a name")
        hook = settings.commands.get(name)
        if hook is None:
            raise RotationError(COMMAND_NOT_CONFIGURED, f"no rotation.commands.{name[:40]}")
        return CommandRotator(params, hook, name, secret)
    raise RotationError(INVALID_SETTINGS, "rotator.type must be random, postgres or command")
