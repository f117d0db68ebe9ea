"""What the agent's own config allows a remote policy or command to do; the control plane cannot
widen it.

``rotation.postgres.<name>.roles`` lists the roles each connection may rotate,
``rotation.commands`` the hooks that exist, and ``rotation.protected_names`` the secrets no
remote policy or command may touch. A policy naming anything else is refused when it arrives
(with an alert) and again when a rotator is built. Refusal texts name the setting to change,
never a secret's name or value.
"""

from __future__ import annotations

from typing import Any

from agent.globmatch import GlobSet
from agent.settings import PostgresConnection, RotationSettings

ROTATORS = ("random", "postgres", "command")


def postgres_refusal(params: dict[str, Any], connection: PostgresConnection) -> str | None:
    """Why the connection's ``roles`` list forbids the roles ``params`` names, or None."""
    allowed = set(connection.roles)
    for key in ("role", "alternate_role"):
        role = params.get(key)
        if role is not None and role not in allowed:
            return (
                f"the policy's {key} is not in the connection's rotation.postgres.<name>.roles "
                "list in agent.yaml"
            )
    return None


def rotator_refusal(rotator: Any, settings: RotationSettings) -> str | None:
    """Why this agent's config forbids a policy's rotator block (a sentence), or None."""
    if not isinstance(rotator, dict) or rotator.get("type") not in ROTATORS:
        return "the policy's rotator type is not one of random, postgres, command"
    params = rotator.get("settings") or {}
    if not isinstance(params, dict):
        return "the policy's rotator settings are not a mapping"
    if rotator["type"] == "postgres":
        connection = settings.postgres.get(str(params.get("connection")))
        if connection is None:
            return "the policy names a PostgreSQL connection agent.yaml does not define"
        return postgres_refusal(params, connection)
    if rotator["type"] == "command" and str(params.get("command")) not in settings.commands:
        return "the policy names a command hook agent.yaml does not define (rotation.commands)"
    return None


class Protected:
    """The ``rotation.protected_names`` globs, compiled once."""

    def __init__(self, settings: RotationSettings) -> None:
        self.globs = tuple(settings.protected_names)
        self._set = GlobSet(self.globs)

    def covers(self, name: str) -> bool:
        """Whether no remote policy or command may touch the secret named ``name``."""
        return bool(self._set.which(name))
