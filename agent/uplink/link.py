"""What one uplink connection needs from the uplink service that dialled it.

:class:`~agent.uplink.connection.Connection` is given its parent as a :class:`Link`, so the
connection depends on this small interface and the service on the connection, never both ways.
:class:`~agent.uplink.service.Uplink` is the one implementation.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from agent.assembly import Agent
from agent.changes import ChangeFeed
from agent.crypto import Clock
from agent.settings import UplinkSettings
from agent.uplink.intake import Alerts
from agent.uplink.state import Certificate, UplinkFiles
from agent.uplink.status import UplinkStatus
from common.metadata_key import MetadataKey


class Link(Protocol):
    """The uplink service as its connection sees it."""

    agent: Agent
    settings: UplinkSettings
    files: UplinkFiles
    clock: Clock
    status: UplinkStatus
    changes: ChangeFeed
    metadata_key: MetadataKey | None
    certificate: Certificate | None
    policies_version: str
    commands_queue: asyncio.Queue[dict[str, Any]]
    alerts: Alerts  # intent_refused alerts (agent/uplink/intake.py)

    def connected(self) -> None:
        """The welcome arrived: the link is up."""

    def note_error(self, message: str) -> None:
        """Remember a problem for the status page and the log."""

    def health_status(self) -> str:
        """The health the heartbeat reports."""

    async def store_policies(self, policies: Any) -> None:
        """Merge the verified policy intents the control plane relayed."""

    async def queue_command(self, frame: dict[str, Any]) -> None:
        """Queue a command frame for verification and execution (bounded)."""

    async def refresh_depth(self) -> None:
        """Count the outbox rows again."""

    async def wait_for_work(self) -> None:
        """Until a tracked write commits, a kick, or the fallback interval passes."""
