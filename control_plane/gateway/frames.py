"""Strict parsing of the frames an agent sends (``docs/uplink.md``): every field checked.

Each ``parse_…`` takes a decoded frame and returns normalised values (times as aware
datetimes) or raises :class:`~common.errors.ValidationError` naming the bad field; the session
answers that with an ``error`` frame and close 4400. Unknown fields are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common import uplink
from common.errors import ValidationError
from common.metadata_key import LABEL_PREFIX, MAX_LABEL_CHARS
from control_plane.db import aware, iso
from control_plane.services.agent_event import AgentEvent

_VERSION = re.compile(r"^[A-Za-z0-9.+_\-]{1,64}$")
_FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{64}$")
_LABEL_BODY = re.compile(r"^[A-Za-z0-9_\-]+$")
_HEX = re.compile(r"^[0-9a-fA-F]{1,128}$")
MAX_EVENT_ID = 48  # stored as "<vault id>:<event id>" in an 80-character column
MAX_INT = 2**53
MAX_VERSION = 2**31 - 1
MAX_TEXT = 500
MAX_SYNC_IDS = 100_000
MAX_CSR = 8192
_EPOCH = frozenset({"epoch"})
_CHAIN_MAC = re.compile(r"[0-9a-f]{64}")
_WORKER_ID = re.compile(r"^w[0-9]+\.")  # ids of worker chains: only with data.chain
MAX_EPOCH = 2**31 - 1
AUDIT_OUTCOMES = frozenset({"ok", "denied", "error", "attempt"})
STREAM_KINDS = {
    "audit": frozenset({"audit"}),
    "outbox": uplink.EVENT_KINDS - {"audit"},
}
ALERT_KINDS = frozenset({"integrity_failure", "audit_failure", "intent_refused", "template_failed"})
RESULT_OUTCOMES = frozenset({"ok", "failed"})


@dataclass(frozen=True)
class Hello:
    """The agent's first frame."""

    vault_id: str
    agent_version: str
    metadata_key_fingerprint: str | None


# --------------------------------------------------------------------------- field checks


def fields(
    doc: Any, where: str, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """``doc`` as an object holding every ``required`` key and nothing unknown."""
    if not isinstance(doc, dict):
        raise ValidationError(f"{where} must be an object")
    unknown = sorted(set(doc) - required - optional)
    if unknown:
        raise ValidationError(f"{where}: unknown field(s) {', '.join(map(str, unknown))[:200]}")
    missing = sorted(required - set(doc))
    if missing:
        raise ValidationError(f"{where}: missing field(s) {', '.join(missing)}")
    return doc


def integer(value: Any, field: str, low: int = 0, high: int = MAX_INT) -> int:
    """A whole number (not a bool) within bounds."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{field} must be a whole number from {low} to {high}")
    return value


def number(value: Any, field: str) -> float:
    """A finite non-negative number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e15:
        raise ValidationError(f"{field} must be a non-negative number")
    return float(value)


def text(value: Any, field: str, limit: int = MAX_TEXT, *, optional: bool = False) -> str | None:
    """A printable string of at most ``limit`` characters."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise ValidationError(f"{field} must be printable text of at most {limit} characters")
    return value


def when(value: Any, field: str, *, optional: bool = False) -> datetime | None:
    """An ISO 8601 time as an aware UTC datetime."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise ValidationError(f"{field} must be an ISO 8601 time")
    try:
        return aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except (ValueError, OverflowError):
        raise ValidationError(f"{field} must be an ISO 8601 time") from None


def one_of(value: Any, field: str, allowed: frozenset[str]) -> str:
    """One of a fixed set of strings."""
    if not isinstance(value, str) or value not in allowed:
        raise ValidationError(f"{field} must be one of {', '.join(sorted(allowed))}")
    return value


def label(value: Any, field: str = "label") -> str | None:
    """A sealed label (``kvl1.`` + base64url, at most 8192 characters) or null."""
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or len(value) > MAX_LABEL_CHARS
        or not value.startswith(LABEL_PREFIX)
        or not _LABEL_BODY.match(value[len(LABEL_PREFIX) :])
    ):
        raise ValidationError(
            f"{field} must be a sealed label ({LABEL_PREFIX}<base64url>, at most "
            f"{MAX_LABEL_CHARS} characters) or null"
        )
    return value


def _id(value: Any, field: str, *, optional: bool = False) -> str | None:
    return uplink.opaque_id(value, field, optional=optional)


def _required_id(value: Any, field: str) -> str:
    checked = uplink.opaque_id(value, field)
    assert checked is not None
    return checked


# --------------------------------------------------------------------------- frames


def parse_hello(frame: dict[str, Any]) -> Hello:
    """``{"type":"hello","protocol":1,"vault_id","agent_version","metadata_key_fingerprint"}``."""
    doc = fields(
        frame,
        "hello",
        frozenset({"type", "protocol", "vault_id", "agent_version"}),
        frozenset({"metadata_key_fingerprint"}),
    )
    if isinstance(doc["protocol"], bool) or doc["protocol"] != uplink.PROTOCOL:
        raise ValidationError(f"hello.protocol must be {uplink.PROTOCOL}")
    version = doc["agent_version"]
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ValidationError("hello.agent_version must be 1-64 characters like 1.2.3")
    fingerprint = doc.get("metadata_key_fingerprint")
    if fingerprint is not None and (
        not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint)
    ):
        raise ValidationError("hello.metadata_key_fingerprint must be sha256:<64 hex> or null")
    return Hello(_required_id(doc["vault_id"], "hello.vault_id"), version, fingerprint)


_HEALTH_OPTIONAL = frozenset(
    {
        "version",
        "uptime_seconds",
        "counts",
        "storage_bytes",
        "outbox_depth",
        "certificate_not_after",
        "audit_head",
        "audit_chains",
        "integrity_failures",
        "audit_failures",
        "policies_version",
    }
)


def parse_heartbeat(frame: dict[str, Any]) -> dict[str, Any]:
    """The heartbeat's ``health`` object, checked field by field (optional ones may be null)."""
    doc = fields(frame, "heartbeat", frozenset({"type", "health"}))
    health = fields(doc["health"], "health", frozenset({"status"}), _HEALTH_OPTIONAL)
    one_of(health["status"], "health.status", uplink.HEALTH_STATES)
    given = {k: v for k, v in health.items() if v is not None}
    for key in ("storage_bytes", "outbox_depth", "integrity_failures", "audit_failures"):
        if key in given:
            integer(given[key], f"health.{key}")
    if "uptime_seconds" in given:
        number(given["uptime_seconds"], "health.uptime_seconds")
    if "version" in given and (
        not isinstance(given["version"], str) or not _VERSION.match(given["version"])
    ):
        raise ValidationError("health.version must be 1-64 characters like 1.2.3")
    if "counts" in given:
        counts = fields(
            given["counts"],
            "health.counts",
            frozenset(),
            frozenset({"secrets", "versions", "tokens"}),
        )
        for key, value in counts.items():
            integer(value, f"health.counts.{key}")
    if "certificate_not_after" in given:
        when(given["certificate_not_after"], "health.certificate_not_after")
    if "audit_head" in given:
        _audit_head(given["audit_head"], "health.audit_head", frozenset({"seq", "mac"}))
    if "audit_chains" in given:
        _audit_chains(given["audit_chains"])
    if "policies_version" in given and (
        not isinstance(given["policies_version"], str) or not _HEX.match(given["policies_version"])
    ):
        raise ValidationError("health.policies_version must be a hex digest")
    return dict(health)


def _audit_head(doc: Any, where: str, required: frozenset[str]) -> dict[str, Any]:
    """One audit chain's head in a heartbeat: its seq, its last entry's MAC, its epoch."""
    head = fields(doc, where, required, _EPOCH)
    integer(head["seq"], f"{where}.seq")
    _epoch(head.get("epoch"), f"{where}.epoch")
    if not isinstance(head["mac"], str) or not _HEX.match(head["mac"]):
        raise ValidationError(f"{where}.mac must be hex")
    return head


def _audit_chains(value: Any) -> None:
    """``health.audit_chains``: the other workers' heads (``workers: N``), one per chain 1..64."""
    most = uplink.MAX_AUDIT_CHAIN
    if not isinstance(value, list) or len(value) > most:
        raise ValidationError(f"health.audit_chains must be a list of at most {most} heads")
    seen: set[int] = set()
    for i, doc in enumerate(value):
        where = f"health.audit_chains[{i}]"
        head = _audit_head(doc, where, frozenset({"chain", "seq", "mac"}))
        chain = integer(head["chain"], f"{where}.chain", 1, most)
        if chain in seen:
            raise ValidationError(f"{where}.chain: chain {chain} is given twice")
        seen.add(chain)


def parse_renew(frame: dict[str, Any]) -> str:
    """The CSR of a ``renew`` frame (PEM text)."""
    doc = fields(frame, "renew", frozenset({"type", "csr"}))
    csr = doc["csr"]
    if not isinstance(csr, str) or not 0 < len(csr) <= MAX_CSR:
        raise ValidationError(f"renew.csr must be a PEM certificate request of at most {MAX_CSR}")
    return csr


def parse_events(frame: dict[str, Any]) -> tuple[str, list[AgentEvent]]:
    """(stream, events) of an ``events`` frame: 1-500 events of that stream's kinds, in order."""
    doc = fields(frame, "events", frozenset({"type", "stream", "batch"}))
    stream = one_of(doc["stream"], "events.stream", uplink.STREAMS)
    batch = doc["batch"]
    if not isinstance(batch, list) or not 1 <= len(batch) <= uplink.MAX_BATCH:
        raise ValidationError(f"events.batch must hold 1 to {uplink.MAX_BATCH} events")
    events: list[AgentEvent] = []
    for n, item in enumerate(batch):
        where = f"events.batch[{n}]"
        raw = fields(item, where, frozenset({"id", "seq", "kind", "at", "data"}))
        event_id = _required_id(raw["id"], f"{where}.id")
        if len(event_id) > MAX_EVENT_ID:
            raise ValidationError(f"{where}.id must be at most {MAX_EVENT_ID} characters")
        seq = integer(raw["seq"], f"{where}.seq")
        if events and seq <= events[-1].seq:
            raise ValidationError(f"{where}.seq must be greater than the one before it")
        kind = one_of(raw["kind"], f"{where}.kind", STREAM_KINDS[stream])
        at = when(raw["at"], f"{where}.at")
        assert at is not None
        data = _DATA[kind](raw["data"], f"{where}.data")
        if kind == "audit":
            _audit_id(event_id, seq, data, where, events[0].data if events else None)
        events.append(AgentEvent(event_id, seq, kind, at, data))
    return stream, events


# --------------------------------------------------------------------------- event data


def _audit(doc: Any, where: str) -> dict[str, Any]:
    d = fields(
        doc,
        where,
        frozenset({"op", "outcome"}),
        frozenset({"status", "actor", "secret_id", "epoch", "mac", "chain"}),
    )
    status, mac, chain = d.get("status"), d.get("mac"), d.get("chain")
    if mac is not None and (not isinstance(mac, str) or not _CHAIN_MAC.fullmatch(mac)):
        raise ValidationError(f"{where}.mac must be 64 lowercase hex digits or null")
    return {
        "op": _required_id(d["op"], f"{where}.op"),
        "outcome": one_of(d["outcome"], f"{where}.outcome", AUDIT_OUTCOMES),
        "status": None if status is None else integer(status, f"{where}.status", 0, 999),
        "actor": _id(d.get("actor"), f"{where}.actor", optional=True),
        "secret_id": _id(d.get("secret_id"), f"{where}.secret_id", optional=True),
        "epoch": _epoch(d.get("epoch"), f"{where}.epoch"),
        "mac": mac,
        # which worker's log (``workers: N``): absent for the agent's own, else 1..MAX_AUDIT_CHAIN
        "chain": 0
        if chain is None
        else integer(chain, f"{where}.chain", 1, uplink.MAX_AUDIT_CHAIN),
    }


def _audit_id(
    event_id: str, seq: int, data: dict[str, Any], where: str, first: dict[str, Any] | None
) -> None:
    """An audit event's id names its chain, epoch and seq; one batch holds one chain."""
    chain = data["chain"]
    if first is not None and first["chain"] != chain:
        raise ValidationError(
            f"{where}.data.chain must be the same as the batch's first event's (send one audit "
            "chain per batch)"
        )
    if chain == 0:
        if _WORKER_ID.match(event_id):
            raise ValidationError(
                f"{where}.id: ids w<k>.… name a worker's audit chain; give data.chain too"
            )
        return
    expected = uplink.audit_event_id(seq, data["epoch"], chain)
    if event_id != expected:
        raise ValidationError(
            f"{where}.id must be {expected} (w<chain>.a<seq>, or w<chain>.a<epoch>.<seq> after "
            "epoch 1)"
        )


def _epoch(value: Any, field: str) -> int:
    """An audit chain epoch (1 when not given: agents before epochs had only one chain)."""
    return 1 if value is None else integer(value, field, 1, MAX_EPOCH)


def _iso(value: Any, field: str) -> str | None:
    """An optional ISO 8601 time, normalised to UTC ``…Z`` text (how it is stored)."""
    return iso(when(value, field, optional=True))


def _rotation(value: Any, where: str) -> dict[str, Any] | None:
    """An inventory record's ``rotation``: ``{state, last_rotated_at, next_due_at}`` or null."""
    if value is None:
        return None
    d = fields(value, where, frozenset({"state"}), frozenset({"last_rotated_at", "next_due_at"}))
    return {
        "state": one_of(d["state"], f"{where}.state", uplink.ROTATION_STATES),
        "last_rotated_at": _iso(d.get("last_rotated_at"), f"{where}.last_rotated_at"),
        "next_due_at": _iso(d.get("next_due_at"), f"{where}.next_due_at"),
    }


def _inventory(doc: Any, where: str) -> dict[str, Any]:
    d = fields(
        doc,
        where,
        frozenset({"secret_id", "version"}),
        frozenset(
            {
                "created_at",
                "updated_at",
                "deleted_at",
                "destroyed",
                "policy_id",
                "rotation",
                "label",
            }
        ),
    )
    destroyed = d.get("destroyed", False)
    if not isinstance(destroyed, bool):
        raise ValidationError(f"{where}.destroyed must be true or false")
    return {
        "secret_id": _required_id(d["secret_id"], f"{where}.secret_id"),
        "version": integer(d["version"], f"{where}.version", 0, MAX_VERSION),
        "created_at": when(d.get("created_at"), f"{where}.created_at", optional=True),
        "updated_at": when(d.get("updated_at"), f"{where}.updated_at", optional=True),
        "deleted_at": when(d.get("deleted_at"), f"{where}.deleted_at", optional=True),
        "destroyed": destroyed,
        "policy_id": _id(d.get("policy_id"), f"{where}.policy_id", optional=True),
        "rotation": _rotation(d.get("rotation"), f"{where}.rotation"),
        "label": label(d.get("label"), f"{where}.label"),
    }


def _inventory_sync(doc: Any, where: str) -> dict[str, Any]:
    d = fields(doc, where, frozenset({"secret_ids"}))
    ids = d["secret_ids"]
    if not isinstance(ids, list) or len(ids) > MAX_SYNC_IDS:
        raise ValidationError(f"{where}.secret_ids must be a list of at most {MAX_SYNC_IDS} ids")
    return {"secret_ids": [_required_id(i, f"{where}.secret_ids[]") for i in ids]}


def _command_result(doc: Any, where: str) -> dict[str, Any]:
    d = fields(
        doc,
        where,
        frozenset({"command_id", "outcome"}),
        frozenset({"message", "secret_id", "version"}),
    )
    version = d.get("version")
    return {
        "command_id": _required_id(d["command_id"], f"{where}.command_id"),
        "outcome": one_of(d["outcome"], f"{where}.outcome", RESULT_OUTCOMES),
        "message": text(d.get("message"), f"{where}.message", optional=True),
        "secret_id": _id(d.get("secret_id"), f"{where}.secret_id", optional=True),
        "version": None if version is None else integer(version, f"{where}.version"),
    }


def _alert(doc: Any, where: str) -> dict[str, Any]:
    d = fields(doc, where, frozenset({"kind", "message"}))
    message = text(d["message"], f"{where}.message")
    assert message is not None
    return {"kind": one_of(d["kind"], f"{where}.kind", ALERT_KINDS), "message": message}


def _rotation_event(doc: Any, where: str) -> dict[str, Any]:
    """A ``rotation`` event (docs/rotation.md): ids, outcome, a fixed reason code, times.

    ``failed`` must name a reason code and ``ok`` must not; no free text is accepted.
    """
    d = fields(
        doc,
        where,
        frozenset({"secret_id", "policy_id", "outcome", "version"}),
        frozenset({"reason", "rotated_at", "next_due_at"}),
    )
    outcome = one_of(d["outcome"], f"{where}.outcome", uplink.ROTATION_OUTCOMES)
    reason = d.get("reason")
    if outcome == "failed":
        reason = one_of(reason, f"{where}.reason", uplink.ROTATION_REASONS)
    elif reason is not None:
        raise ValidationError(f"{where}.reason must be null when the outcome is ok")
    return {
        "secret_id": _required_id(d["secret_id"], f"{where}.secret_id"),
        "policy_id": _id(d["policy_id"], f"{where}.policy_id", optional=True),
        "outcome": outcome,
        "reason": reason,
        "version": integer(d["version"], f"{where}.version", 0, MAX_VERSION),
        "rotated_at": _iso(d.get("rotated_at"), f"{where}.rotated_at"),
        "next_due_at": _iso(d.get("next_due_at"), f"{where}.next_due_at"),
    }


_DATA = {
    "audit": _audit,
    "inventory": _inventory,
    "inventory_sync": _inventory_sync,
    "command_result": _command_result,
    "alert": _alert,
    "rotation": _rotation_event,
}
