"""A VaultAgent's ``status``: conditions (Ready, Progressing, InvalidSpec) and replica counts."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def condition(
    kind: str,
    state: bool,
    reason: str,
    message: str,
    generation: int,
    previous: Sequence[Mapping[str, Any]] = (),
    clock: Clock = _now,
) -> dict[str, Any]:
    """One condition; keeps the old ``lastTransitionTime`` when the status did not change."""
    status = "True" if state else "False"
    since = clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    for old in previous:
        if old.get("type") == kind and old.get("status") == status:
            since = str(old.get("lastTransitionTime") or since)
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }


def invalid_status(
    message: str, generation: int, previous: Sequence[Mapping[str, Any]] = (), clock: Clock = _now
) -> dict[str, Any]:
    """The status of a VaultAgent whose spec is refused."""
    return {
        "observedGeneration": generation,
        "phase": "Invalid",
        "conditions": [
            condition("Ready", False, "InvalidSpec", message, generation, previous, clock),
            condition("Progressing", False, "InvalidSpec", message, generation, previous, clock),
            condition("InvalidSpec", True, "InvalidSpec", message, generation, previous, clock),
        ],
    }


def _progress(sts: Mapping[str, Any] | None, desired: int) -> tuple[bool, str, str]:
    """Whether the rollout is done with every pod ready, and why (reason, message)."""
    st = (sts or {}).get("status") or {}
    ready = int(st.get("readyReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    sts_gen = int((sts or {}).get("metadata", {}).get("generation") or 0)
    seen = int(st.get("observedGeneration") or 0)
    rolled = seen >= sts_gen and updated >= desired and int(st.get("replicas") or 0) == desired
    if sts is None:
        return False, "Creating", "the StatefulSet is being created"
    if rolled and ready >= desired:
        return True, "AllReplicasReady", f"{ready}/{desired} agents ready"
    return False, "RollingOut", f"{ready}/{desired} agents ready, {updated} updated"


def from_statefulset(
    sts: Mapping[str, Any] | None,
    desired: int,
    generation: int,
    selector: str,
    previous: Sequence[Mapping[str, Any]] = (),
    clock: Clock = _now,
) -> dict[str, Any]:
    """The status of a valid VaultAgent, from its StatefulSet (None: not created yet)."""
    st = (sts or {}).get("status") or {}
    is_ready, reason, message = _progress(sts, desired)

    def cond(kind: str, state: bool, why: str, text: str = message) -> dict[str, Any]:
        """One condition of this status."""
        return condition(kind, state, why, text, generation, previous, clock)

    return {
        "observedGeneration": generation,
        "replicas": int(st.get("replicas") or 0),
        "readyReplicas": int(st.get("readyReplicas") or 0),
        "selector": selector,
        "phase": "Ready" if is_ready else "Progressing",
        "conditions": [
            cond("Ready", is_ready, reason),
            cond("Progressing", not is_ready, "Complete" if is_ready else reason),
            cond("InvalidSpec", False, "SpecAccepted", "the spec is valid"),
        ],
    }
