"""One checked event from an agent's ``events`` batch, as the gateway hands it to the services."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class AgentEvent:
    """One checked event of a batch (``data`` already normalised by the gateway)."""

    id: str
    seq: int
    kind: str
    at: datetime
    data: dict[str, Any]
