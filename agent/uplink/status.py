"""What the local health endpoint says about the uplink (kept in memory, never a query)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STATES = (
    "not_enrolled",  # no state.json: `keyvault agent enroll` has not been run
    "connecting",  # dialling the gateway
    "connected",  # hello/welcome done, streams flowing
    "backing_off",  # waiting before the next dial (full-jitter backoff)
    "revoked",  # the control plane revoked this vault: dialling stopped
    "must_reenroll",  # the certificate expired or is unknown: dialling stopped
    "refused",  # refused for another reason (metadata key mismatch): dialling stopped
)
STOPPED = frozenset({"revoked", "must_reenroll", "refused"})


@dataclass
class UplinkStatus:
    """The uplink's state for ``/api/v1/sys/health``."""

    state: str = "not_enrolled"
    vault_id: str | None = None
    control_plane_url: str | None = None
    last_connected_at: str | None = None
    last_error: str | None = None
    certificate_not_after: str | None = None
    outbox_rows: int = 0  # kv_outbox rows at the last count
    audit_cursor: int | None = None  # last audit seq acknowledged (None: not enrolled)

    def outbox_depth(self, audit_head: int) -> int:
        """Outbox rows plus audit entries not yet acknowledged (live: the head is in memory)."""
        behind = 0 if self.audit_cursor is None else max(0, audit_head - self.audit_cursor)
        return self.outbox_rows + behind

    def to_json(self, audit_head: int) -> dict[str, Any]:
        """The ``uplink`` object of the health document."""
        return {
            "state": self.state,
            "vault_id": self.vault_id,
            "control_plane_url": self.control_plane_url,
            "last_connected_at": self.last_connected_at,
            "last_error": self.last_error,
            "outbox_depth": self.outbox_depth(audit_head),
            "certificate_not_after": self.certificate_not_after,
        }
