"""kopf handlers for ``VaultAgent``: reconcile on create/update/resume, scale, resize, status.

Every handler takes the API from ``memo.api`` (set at start-up; tests put a fake there), so
each one can be called directly with plain dicts. Delete needs no work and no finalizer: the
owned ConfigMap, Services and StatefulSet carry ownerReferences, and Kubernetes' garbage
collector deletes them with the VaultAgent. The data volumes stay (the StatefulSet's claim
retention policy is ``Retain``): they hold the encrypted store, which is never destroyed by a
single ``kubectl delete``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from k8s_operator import GROUP, PLURAL, VERSION
from k8s_operator.api import HttpKubeApi, KubeApi, KubeApiError
from k8s_operator.crd import AgentSpec, InvalidSpecError, parse_spec
from k8s_operator.resources import build_all, selector_labels
from k8s_operator.status import from_statefulset, invalid_status

RETRY_DELAY = 30
STATUS_INTERVAL = 30.0
Log = logging.Logger | logging.LoggerAdapter[Any]


def _api(memo: Any) -> KubeApi:
    api: KubeApi = memo.api
    return api


def _ident(body: Mapping[str, Any]) -> tuple[str, str, int]:
    meta = body["metadata"]
    return meta["name"], meta["namespace"], int(meta.get("generation") or 1)


def _previous(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((body.get("status") or {}).get("conditions") or [])


def selector(name: str) -> str:
    """The label selector string the scale subresource reports."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def _checked(body: Mapping[str, Any]) -> AgentSpec | dict[str, Any]:
    """The parsed spec, or the InvalidSpec status to write."""
    name, _, generation = _ident(body)
    try:
        return parse_spec(name, body.get("spec") or {})
    except InvalidSpecError as exc:
        return invalid_status(exc.message, generation, _previous(body))


async def reconcile(api: KubeApi, body: Mapping[str, Any], logger: Log) -> dict[str, Any]:
    """Bring the owned objects in line with the spec; returns the new status."""
    name, namespace, generation = _ident(body)
    spec = _checked(body)
    if isinstance(spec, dict):
        logger.warning(
            "VaultAgent %s/%s refused: %s", namespace, name, spec["conditions"][0]["message"]
        )
        return spec
    objects = build_all(body, spec)
    sts = objects[-1]
    existing = await api.get("StatefulSet", namespace, name)
    if existing is not None:
        # volumeClaimTemplates cannot change; resize() grows the existing claims instead
        sts["spec"]["volumeClaimTemplates"] = existing["spec"]["volumeClaimTemplates"]
    applied: dict[str, Any] = {}
    for obj in objects:
        applied = await api.apply(obj)
    logger.info("VaultAgent %s/%s reconciled: %d replica(s)", namespace, name, spec.replicas)
    return from_statefulset(applied, spec.replicas, generation, selector(name), _previous(body))


def _retry(exc: KubeApiError) -> kopf.TemporaryError:
    return kopf.TemporaryError(exc.message, delay=RETRY_DELAY)


async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Post only warnings and errors as Kubernetes events (the API comes in ``memo.api``)."""
    settings.posting.level = logging.WARNING


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Close the API connections."""
    api = getattr(memo, "api", None)
    if isinstance(api, HttpKubeApi):
        await api.close()


async def reconcile_handler(
    body: Mapping[str, Any], patch: kopf.Patch, memo: Any, logger: Log, **_: Any
) -> None:
    """Create or update the agent's objects and record the outcome in ``status``."""
    try:
        status = await reconcile(_api(memo), body, logger)
    except KubeApiError as exc:
        raise _retry(exc) from None
    patch.status.update(status)


async def scale(
    old: Any, new: Any, body: Mapping[str, Any], patch: kopf.Patch, memo: Any, logger: Log, **_: Any
) -> None:
    """Set the StatefulSet's replicas when ``spec.replicas`` (or the scale subresource) changes."""
    name, namespace, generation = _ident(body)
    if old is None or old == new or isinstance(_checked(body), dict):
        return  # a new object (reconciled on create) or a refused spec
    try:
        sts = await _api(memo).patch("StatefulSet", namespace, name, {"spec": {"replicas": new}})
    except KubeApiError as exc:
        raise _retry(exc) from None
    logger.info("VaultAgent %s/%s scaled from %s to %s", namespace, name, old, new)
    if sts is not None:
        patch.status.update(from_statefulset(sts, new, generation, selector(name), _previous(body)))


async def resize(
    old: Any, new: Any, body: Mapping[str, Any], memo: Any, logger: Log, **_: Any
) -> None:
    """Grow each replica's data claim (the storage class must allow volume expansion)."""
    name, namespace = _ident(body)[:2]
    spec = _checked(body)
    if old is None or old == new or isinstance(spec, dict):
        return
    request = {"spec": {"resources": {"requests": {"storage": spec.storage_size}}}}
    try:
        for ordinal in range(spec.replicas):
            await _api(memo).patch(
                "PersistentVolumeClaim", namespace, f"data-{name}-{ordinal}", request
            )
    except KubeApiError as exc:
        raise _retry(exc) from None
    logger.info("VaultAgent %s/%s volumes resized to %s", namespace, name, new)


async def refresh_status(body: Mapping[str, Any], patch: kopf.Patch, memo: Any, **_: Any) -> None:
    """Copy the StatefulSet's progress (ready replicas, rollout) into the status."""
    name, namespace, generation = _ident(body)
    spec = _checked(body)
    if isinstance(spec, dict):
        return
    try:
        sts = await _api(memo).get("StatefulSet", namespace, name)
    except KubeApiError as exc:
        raise _retry(exc) from None
    status = from_statefulset(sts, spec.replicas, generation, selector(name), _previous(body))
    current = body.get("status") or {}
    if any(current.get(k) != v for k, v in status.items()):
        patch.status.update(status)


async def deleted(body: Mapping[str, Any], logger: Log, **_: Any) -> None:
    """Record the deletion; ownerReferences make Kubernetes delete the owned objects."""
    name, namespace = _ident(body)[:2]
    logger.info(
        "VaultAgent %s/%s deleted: its StatefulSet, Services and ConfigMap go with it; "
        "the data volumes data-%s-* are kept",
        namespace,
        name,
        name,
    )


# Registered here rather than by decorators, so the names above stay plain coroutine functions
# (kopf's decorators retype them) that tests call directly.
kopf.on.startup()(startup)
kopf.on.cleanup()(cleanup)
kopf.on.resume(GROUP, VERSION, PLURAL)(reconcile_handler)
kopf.on.create(GROUP, VERSION, PLURAL)(reconcile_handler)
kopf.on.update(GROUP, VERSION, PLURAL, field="spec")(reconcile_handler)
kopf.on.field(GROUP, VERSION, PLURAL, field="spec.replicas")(scale)
kopf.on.field(GROUP, VERSION, PLURAL, field="spec.storage.size")(resize)
kopf.timer(GROUP, VERSION, PLURAL, interval=STATUS_INTERVAL, initial_delay=5.0)(refresh_status)
kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)(deleted)
