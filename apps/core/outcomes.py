"""What a finished vault command means for whoever waits on it: the error its failure stands for.

An agent reports a failed command with one of a few fixed texts (never a name or a value). The
same failure met directly on the agent raises one of :mod:`common.errors`; mapping the text back
to that class lets ``keyvault vaults rotate --wait`` and ``keyvault secrets rotate`` exit with the
same code for the same failure.
"""

from __future__ import annotations

from typing import Any

from common import errors as e

# Prefixes of the agent's fixed failure texts (agent/uplink/commands.py), most specific first.
FAILURE_KINDS: tuple[tuple[str, type[e.KeyVaultError]], ...] = (
    ("the rotation failed", e.ConflictError),
    ("no such secret", e.NotFoundError),
    ("the secret's state does not allow it", e.ConflictError),
    ("the command's arguments are not valid", e.ValidationError),
    ("the agent's store or audit log is unavailable", e.UnavailableError),
    ("the agent stopped while running this command", e.UnavailableError),
)


class CommandFailedError(e.KeyVaultError):
    """A command sent to a vault ended ``failed``; ``exit_code`` is that of the same failure
    met on the agent directly (1 when the failure is not one the agent names)."""

    code = "command_failed"
    exit_code = 1

    def __init__(self, message: str, kind: type[e.KeyVaultError] | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.exit_code = kind.exit_code
            self.http_status = kind.http_status


def result_text(cmd: dict[str, Any]) -> str:
    """The agent's message for a command (``result`` text, or an object's ``message``)."""
    result = cmd.get("result")
    if isinstance(result, dict):
        result = result.get("message")
    return str(result) if result else ""


def failure_kind(message: str) -> type[e.KeyVaultError] | None:
    """The error class an agent's fixed failure text stands for (None: not one of them)."""
    for prefix, kind in FAILURE_KINDS:
        if message.startswith(prefix):
            return kind
    return None
