"""The uplink protocol between a vault agent and the control plane (version 1).

The agent dials out to the control plane's *agent gateway* (its own TLS 1.3 listener, server
certificate from the control plane's service CA) and keeps one WebSocket open at
``/api/v1/agent/uplink``, authenticated by its client certificate (issued at enrollment by the
organisation's CA, an intermediate of the service CA). Every frame is one JSON text message
``{"type": ..., ...}``; :func:`encode` and :func:`decode` are the only (de)serialisers.

Agent → control plane: ``hello`` (first), ``heartbeat``, ``events`` (a batch from one durable
stream, acknowledged with ``ack``), ``renew`` (a CSR). Control plane → agent: ``welcome``,
``policies`` (all on connect, the full list again after a change), ``command``, ``ack``,
``certificate``, ``error``. The full description with examples is ``docs/uplink.md``.

Nothing in any frame is a secret value, key, token or plaintext secret name: secrets are
named by opaque id, and names travel only inside sealed labels (:mod:`common.metadata_key`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from common.errors import ValidationError

PROTOCOL = 1
UPLINK_PATH = "/api/v1/agent/uplink"
BOOTSTRAP_PATH = "/api/v1/agent/bootstrap"
REGISTER_PATH = "/api/v1/vaults/register"
MAX_FRAME = 4 * 1024 * 1024  # bytes of one message, either way
MAX_BATCH = 500  # events in one ``events`` frame
# Worker audit chains (``workers: N``): worker k's audit events carry ``data.chain = k``, ids
# ``w<k>.a<seq>`` (epoch 1) or ``w<k>.a<epoch>.<seq>``. A control plane that stores them says
# so with ``welcome.audit_chains`` (the highest chain it accepts); chain 0 carries no ``chain``.
MAX_AUDIT_CHAIN = 64

# Close codes (RFC 6455 private range) the control plane uses, and what the agent does.
CLOSE_PROTOCOL = 4400  # malformed or unexpected frame: reconnect with backoff
CLOSE_UNAUTHENTICATED = 4401  # no or unknown client certificate: must re-enroll
CLOSE_REFUSED = 4403  # revoked vault or metadata-key mismatch: stop, report why
CLOSE_REPLACED = 4409  # another connection of the same vault took over: reconnect with backoff
CLOSE_GOING_AWAY = 1001  # replica shutting down: reconnect with backoff

# ``error.code`` values (sent before a close, and in the HTTP 403 body before an upgrade).
ERR_REVOKED = "vault_revoked"
ERR_UNKNOWN_VAULT = "unknown_vault"
ERR_NO_CERTIFICATE = "client_certificate_required"
ERR_METADATA_KEY = "metadata_key_mismatch"
ERR_PROTOCOL = "protocol_error"
ERR_RENEWAL = "renewal_failed"
ERR_SUPERSEDED = "certificate_superseded"  # a renewal replaced it: must re-enroll

AGENT_TYPES = frozenset({"hello", "heartbeat", "events", "renew"})
SERVER_TYPES = frozenset({"welcome", "policies", "command", "ack", "certificate", "error"})
STREAMS = frozenset({"outbox", "audit"})
EVENT_KINDS = frozenset(
    {"audit", "inventory", "inventory_sync", "command_result", "alert", "rotation"}
)
COMMANDS = frozenset({"rotate", "resync"})
HEALTH_STATES = frozenset({"healthy", "degraded", "must_reenroll", "revoked"})

# Rotation (docs/rotation.md): a ``rotation`` event's outcome and reason code, and the state an
# inventory record's ``rotation`` carries. Reasons are fixed codes, never free text.
ROTATION_OUTCOMES = frozenset({"ok", "failed"})
ROTATION_STATES = frozenset({"ok", "failed", "pending", "due"})
ROTATION_REASONS = frozenset(
    {
        "database_unreachable",
        "authentication_failed",
        "verification_failed",
        "command_failed",
        "command_timeout",
        "command_not_configured",
        "connection_not_configured",
        "interrupted",
        "invalid_settings",
        "internal_error",
        "not_allowed",
    }
)

_OPAQUE_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,80}$")


def encode(message: dict[str, Any]) -> str:
    """One frame's text (compact JSON)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def decode(text: str | bytes, allowed: frozenset[str]) -> dict[str, Any]:
    """Parse one frame and check its ``type`` is one of ``allowed``; ValidationError otherwise."""
    if len(text) > MAX_FRAME:
        raise ValidationError(f"frame larger than {MAX_FRAME} bytes")
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("frame is not JSON") from None
    if not isinstance(message, dict):
        raise ValidationError("frame is not a JSON object")
    kind = message.get("type")
    if kind not in allowed:
        raise ValidationError(f"unexpected frame type {kind!r}")
    return message


def opaque_id(value: Any, field: str, *, optional: bool = False) -> str | None:
    """Check an opaque identifier (vault, secret, command, actor, event ids)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not _OPAQUE_ID.match(value):
        raise ValidationError(f"{field} must be 1-80 characters of A-Z a-z 0-9 _ . : -")
    return value


def audit_event_id(seq: int, epoch: int = 1, chain: int = 0) -> str:
    """The id of audit entry ``seq`` of ``epoch`` on ``chain`` (0: the agent's own log)."""
    own = f"a{seq}" if epoch == 1 else f"a{epoch}.{seq}"
    return own if chain == 0 else f"w{chain}.{own}"


def error_frame(code: str, message: str) -> dict[str, Any]:
    """The ``error`` frame (also the JSON body of a refused upgrade, under ``error``)."""
    return {"type": "error", "code": code, "message": message}
