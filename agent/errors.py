"""The agent's exception root. Shared kinds (not found, conflict…) come from ``common.errors``."""

from __future__ import annotations

from common.errors import KeyVaultError


class AgentError(KeyVaultError):
    """Root of errors raised only by the agent."""

    code = "agent_error"


class AlreadyRunningError(AgentError):
    """Another agent process holds this data folder."""

    code = "already_running"
    exit_code = 75  # EX_TEMPFAIL


class NotInitialisedError(AgentError):
    """The data folder has no keystore yet."""

    code = "not_initialised"
    exit_code = 78
