"""The operator stream's contract: every event the control plane pushes to operator apps.

Twin of :mod:`common.uplink`. The control plane publishes an :class:`Event` through an
:class:`EventSink`; the operator WebSocket (``/api/v1/stream``) carries it as one JSON text
message ``{"type": <kind>, "org_id", "at", "data": {...}}``; ``apps/core`` reads it back with
:func:`decode`. :func:`to_wire`/:func:`encode` and :func:`decode` are the only (de)serialisers,
and the :class:`EventKind` constants below are the only place an event name is written.

Each kind names the fields its ``data`` always carries (``required``), the other fields it may
carry (``optional``) and its audience: the least role that may see it (``viewer`` = any member
of the organisation). The stream sends an organisation's events to that organisation's
operators only. Nothing in an event is a secret value, key, token or plaintext secret name.
The full table with examples is in ``docs/operator-apps.md``.

Besides events the stream carries three control messages that are not events: the server's
``hello`` (first), and ``ping``/``pong`` keep-alives (:data:`CONTROL_TYPES`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from common.errors import ValidationError

MAX_MESSAGE = 1024 * 1024  # bytes of one stream message
ANY_MEMBER = "viewer"  # the least role: every member of the organisation

HELLO = "hello"
PING = "ping"
PONG = "pong"
AUTH = "auth"
CONTROL_TYPES = frozenset({HELLO, PING, PONG, AUTH})

_ALERT_FIELDS = ("key", "kind", "severity", "vault_id", "message", "state", "created_at")


@dataclass(frozen=True)
class EventKind:
    """One kind of operator event: its name, its ``data`` fields and who may see it."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    audience: str = ANY_MEMBER
    summary: str = ""

    @property
    def family(self) -> str:
        """The part before the dot (``vault``, ``alert``, ``policy`` …)."""
        return self.name.split(".", 1)[0]

    def __str__(self) -> str:
        return self.name


VAULT_REGISTERED = EventKind(
    "vault.registered",
    ("vault_id", "name"),
    summary="an agent finished enrollment; a new vault exists",
)
VAULT_STATUS = EventKind(
    "vault.status",
    ("vault_id", "status"),
    summary="a vault went online, offline or was revoked (status: online|offline|revoked)",
)
VAULT_REFUSED = EventKind(
    "vault.refused",
    ("vault_id", "code", "message"),
    summary="the gateway refused an agent's connection (e.g. its metadata key differs); why",
)
INVENTORY_CHANGED = EventKind(
    "inventory.changed",
    ("vault_id", "items"),
    ("secrets",),
    summary="a vault's secret inventory or rotation state changed; reload its inventory",
)
COMMAND_RESULT = EventKind(
    "command.result",
    ("id", "vault_id", "state"),
    ("command", "args", "result", "created_by", "created_at", "updated_at"),
    summary="an agent finished a command (the command record as GET /commands/{id})",
)
ALERT_RAISED = EventKind(
    "alert.raised",
    ("id",),
    _ALERT_FIELDS,
    summary="a new alert opened (the alert record as GET /alerts)",
)
ALERT_ACKNOWLEDGED = EventKind(
    "alert.acknowledged",
    ("id",),
    _ALERT_FIELDS,
    summary="an operator acknowledged an alert (the alert record)",
)
ALERT_RESOLVED = EventKind(
    "alert.resolved",
    ("id",),
    _ALERT_FIELDS,
    summary="an alert was resolved by an operator or by the system (the alert record)",
)
POLICY_CREATED = EventKind(
    "policy.created",
    ("id",),
    ("name", "version", "interval_days", "vault_ids", "rotator", "created_at", "updated_at"),
    summary="a rotation policy was created (the policy record as GET /policies)",
)
POLICY_UPDATED = EventKind(
    "policy.updated",
    ("id",),
    POLICY_CREATED.optional,
    summary="a rotation policy was changed (the policy record, with its new version)",
)
POLICY_DELETED = EventKind("policy.deleted", ("id",), summary="a rotation policy was deleted")
METADATA_KEY_CHANGED = EventKind(
    "org.metadata_key",
    ("fingerprint",),
    summary="the organisation registered a new metadata-key fingerprint",
)

USER_CHANGED = EventKind(
    "user.changed",
    ("user_id", "role"),
    summary="a user's role changed (ids and roles only: e-mail addresses stay behind GET /users)",
)
USER_REMOVED = EventKind("user.removed", ("user_id",), summary="a user was removed")
USER_SESSIONS_ENDED = EventKind(
    "user.sessions_ended",
    ("user_id", "count"),
    summary="sessions of a user were ended (by an admin, a password reset or change)",
)

KINDS: dict[str, EventKind] = {
    k.name: k
    for k in (
        VAULT_REGISTERED,
        VAULT_STATUS,
        VAULT_REFUSED,
        INVENTORY_CHANGED,
        COMMAND_RESULT,
        ALERT_RAISED,
        ALERT_ACKNOWLEDGED,
        ALERT_RESOLVED,
        POLICY_CREATED,
        POLICY_UPDATED,
        POLICY_DELETED,
        METADATA_KEY_CHANGED,
        USER_CHANGED,
        USER_REMOVED,
        USER_SESSIONS_ENDED,
    )
}
ALERT_MOVED = {"acknowledged": ALERT_ACKNOWLEDGED, "resolved": ALERT_RESOLVED}


@dataclass(frozen=True)
class Event:
    """One operator event: its kind, the organisation it belongs to, when, and its data."""

    kind: EventKind
    org_id: str
    at: str
    data: dict[str, Any] = field(default_factory=dict)


class EventSink(Protocol):
    """Where a control-plane service sends its events (the bus, in production)."""

    async def publish(self, event: Event) -> None:
        """Deliver ``event`` to the organisation's operator streams."""


def make(kind: EventKind, org_id: str, at: datetime, data: dict[str, Any]) -> Event:
    """A checked event at ``at`` (naive = UTC); ValidationError if ``data`` lacks a required
    field of its kind."""
    _check_fields(kind, data)
    moment = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return Event(kind, org_id, moment.isoformat().replace("+00:00", "Z"), data)


def to_wire(event: Event) -> dict[str, Any]:
    """The JSON object a stream message carries."""
    return {"type": event.kind.name, "org_id": event.org_id, "at": event.at, "data": event.data}


def encode(event: Event) -> str:
    """One stream message's text (compact JSON)."""
    return json.dumps(to_wire(event), separators=(",", ":"), allow_nan=False)


def decode(message: str | bytes | dict[str, Any]) -> Event:
    """Parse and check one stream message; ValidationError saying what is wrong otherwise.

    Refuses control messages (check :func:`message_type` first), unknown kinds, a ``data``
    that is not an object or lacks a required field, and a non-string ``org_id``/``at``.
    """
    doc = _parse(message)
    name = doc.get("type")
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValidationError(f"unknown event kind {name!r}; known: {', '.join(sorted(KINDS))}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise ValidationError(f"{kind.name} event: data must be a JSON object")
    _check_fields(kind, data)
    org_id, at = doc.get("org_id", ""), doc.get("at", "")
    if not isinstance(org_id, str) or not isinstance(at, str):
        raise ValidationError(f"{kind.name} event: org_id and at must be strings")
    return Event(kind, org_id, at, data)


def message_type(message: str | bytes) -> tuple[str | None, dict[str, Any]]:
    """Parse one stream message; ``(type, object)`` — ValidationError if it is not an object."""
    doc = _parse(message)
    kind = doc.get("type")
    return (kind if isinstance(kind, str) else None), doc


def _parse(message: str | bytes | dict[str, Any]) -> dict[str, Any]:
    if isinstance(message, dict):
        return message
    if len(message) > MAX_MESSAGE:
        raise ValidationError(f"stream message larger than {MAX_MESSAGE} bytes")
    try:
        doc = json.loads(message)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("stream message is not JSON") from None
    if not isinstance(doc, dict):
        raise ValidationError("stream message is not a JSON object")
    return doc


def _check_fields(kind: EventKind, data: dict[str, Any]) -> None:
    missing = [name for name in kind.required if name not in data]
    if missing:
        raise ValidationError(f"{kind.name} event: data lacks {', '.join(missing)}")
