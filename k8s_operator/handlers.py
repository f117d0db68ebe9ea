"""kopf handlers for ``VaultAgent``: reconcile on create/update/resume, scale, resize, and
the owned objects' events (repair and status).

Every handler takes the API from ``memo.api`` (set at start-up; tests put a fake there), so
each one can be called directly with plain dicts.

**No finalizer.** kopf puts a finalizer on a resource only for handlers that need one: a
non-optional delete handler, a timer or a daemon. The VaultAgent has none of those (the delete
handler is ``optional=True``; the status follows the StatefulSet's own events instead of a
timer), so a VaultAgent is deleted at once, with or without a running operator. Everything it
owns carries an ownerReference, and Kubernetes' garbage collector deletes it with the
VaultAgent. The data volumes stay (the claim retention policy is ``Retain``): they hold the
encrypted store, which is never destroyed by a single ``kubectl delete``.

**Owned objects are watched.** Events of the StatefulSet, Services, ConfigMap, Secrets,
PodDisruptionBudget, NetworkPolicy and CronJob labelled ``managed-by: keyvault-operator`` (a
server-side label selector: the operator never lists other Secrets) reach :func:`owned_event`:
a deleted one is re-made by reconciling its owner, and the StatefulSet's changes refresh the
owner's status.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from k8s_operator import GROUP, KIND, MANAGER, PLURAL, VERSION
from k8s_operator.api import HttpKubeApi, KubeApi, KubeApiError
from k8s_operator.crd import AgentSpec, InvalidSpecError, parse_spec
from k8s_operator.resources import build_all, selector_labels
from k8s_operator.status import from_statefulset, invalid_status
from k8s_operator.tls import certificates, ensure_operator_tls

RETRY_DELAY = 30
MANAGED = {"app.kubernetes.io/managed-by": MANAGER}
# (group, version, plural) of every kind a VaultAgent owns and the operator watches
OWNED = (
    ("apps", "v1", "statefulsets"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("", "v1", "secrets"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("batch", "v1", "cronjobs"),
)
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
    await _tls(api, body, spec, logger)
    objects = build_all(body, spec)
    sts = objects[-1]
    existing = await api.get("StatefulSet", namespace, name)
    if existing is not None:
        # volumeClaimTemplates cannot change; resize() grows the existing claims instead
        sts["spec"]["volumeClaimTemplates"] = existing["spec"]["volumeClaimTemplates"]
    await _retire(api, body, spec, logger)
    applied: dict[str, Any] = {}
    for obj in objects:
        applied = await api.apply(obj)
    logger.info("VaultAgent %s/%s reconciled: %d replica(s)", namespace, name, spec.replicas)
    return from_statefulset(applied, spec.replicas, generation, selector(name), _previous(body))


async def _tls(api: KubeApi, body: Mapping[str, Any], spec: AgentSpec, logger: Log) -> None:
    """The pods' certificates: made from the VaultAgent's CA, asked of cert-manager, or given."""
    name, namespace, _ = _ident(body)
    if spec.tls.mode == "operator":
        written = await ensure_operator_tls(api, body, domain=spec.tls.cluster_domain)
        if written:
            logger.info("VaultAgent %s/%s TLS Secrets written: %s", namespace, name, written)
    elif spec.tls.mode == "issuer":
        try:
            for cert in certificates(body, spec):
                await api.apply(cert)
        except KubeApiError as exc:
            raise KubeApiError(
                f"spec.tls.issuerRef needs cert-manager (kind Certificate, cert-manager.io/v1) "
                f"installed in the cluster: {exc.message}"
            ) from None


async def _retire(api: KubeApi, body: Mapping[str, Any], spec: AgentSpec, logger: Log) -> None:
    """Objects a spec change no longer wants. The operator deletes nothing (its RBAC has no
    delete): a backup CronJob is suspended; a NetworkPolicy left over is reported."""
    name, namespace, _ = _ident(body)
    if spec.backup is None and await api.get("CronJob", namespace, f"{name}-backup"):
        await api.patch("CronJob", namespace, f"{name}-backup", {"spec": {"suspend": True}})
        logger.info("VaultAgent %s/%s: spec.backup removed, CronJob suspended", namespace, name)
    if not spec.network_policy.enabled and await api.get("NetworkPolicy", namespace, name):
        logger.warning(
            "VaultAgent %s/%s: spec.networkPolicy.enabled is false but NetworkPolicy %s still "
            "applies; delete it with `kubectl -n %s delete networkpolicy %s`",
            namespace,
            name,
            name,
            namespace,
            name,
        )


def _retry(exc: KubeApiError) -> kopf.TemporaryError:
    return kopf.TemporaryError(exc.message, delay=RETRY_DELAY)


async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Post only warnings and errors as Kubernetes events; watch only the operator's own
    objects (a server-side label selector); the API comes in ``memo.api``."""
    settings.posting.level = logging.WARNING
    selector = ",".join(f"{k}={v}" for k, v in MANAGED.items())
    for group, version, plural in OWNED:
        settings.watching.label_selectors[group, version, plural] = selector


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


def _owner_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The controlling VaultAgent reference of an owned object, or None."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion") == f"{GROUP}/{VERSION}":
            if ref.get("controller"):
                return ref
    return None


def status_from(owner: Mapping[str, Any], sts: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The owner's status from its StatefulSet; None when it is unchanged or the spec refused."""
    name, _, generation = _ident(owner)
    spec = _checked(owner)
    if isinstance(spec, dict):
        return None
    status = from_statefulset(sts, spec.replicas, generation, selector(name), _previous(owner))
    current = owner.get("status") or {}
    if all(current.get(k) == v for k, v in status.items()):
        return None
    return status


async def owned_event(
    event: Mapping[str, Any], body: Mapping[str, Any], memo: Any, logger: Log, **_: Any
) -> None:
    """An owned object changed: re-make its owner's objects when it was deleted, and copy the
    StatefulSet's progress (ready replicas, rollout) into the owner's status."""
    ref = _owner_ref(body)
    kind = body.get("kind")
    deleted = event.get("type") == "DELETED"
    if ref is None or not (deleted or kind == "StatefulSet"):
        return
    namespace = body["metadata"]["namespace"]
    api = _api(memo)
    try:
        owner = await api.get(KIND, namespace, ref["name"])
        if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
            return  # the owner is gone (or replaced): the garbage collector cleans up
        if owner["metadata"].get("deletionTimestamp"):
            return
        if deleted:
            logger.warning(
                "%s %s/%s owned by VaultAgent %s was deleted; re-making it",
                kind,
                namespace,
                body["metadata"]["name"],
                ref["name"],
            )
            status: dict[str, Any] | None = await reconcile(api, owner, logger)
        else:
            status = status_from(owner, body)
        if status is not None:
            await api.patch_status(namespace, ref["name"], status)
    except KubeApiError as exc:
        raise _retry(exc) from None


async def deleted(body: Mapping[str, Any], logger: Log, **_: Any) -> None:
    """Record the deletion; ownerReferences make Kubernetes delete the owned objects."""
    name, namespace = _ident(body)[:2]
    logger.info(
        "VaultAgent %s/%s deleted: the objects it owns go with it (garbage collector); "
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
kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)(deleted)
for _group, _version, _plural in OWNED:
    kopf.on.event(_group, _version, _plural, labels=MANAGED)(owned_event)
