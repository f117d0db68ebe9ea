"""The ``VaultAgent`` spec as the operator reads it: defaults filled in, rules checked.

The CRD (``deploy/k8s/crd.yaml``) enforces the same rules at admission; they are checked here
too so an object stored before the CRD had a rule (or on a cluster without CEL) is still
refused with a clear ``InvalidSpec`` condition instead of a broken StatefulSet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from common.errors import ValidationError

DEFAULT_IMAGE = "keyvault/agent:0.1.0"
DEFAULT_STORE_PORT = 5432
ANTI_AFFINITY = ("preferred", "required")
ISSUER_KINDS = ("Issuer", "ClusterIssuer")
# a five-field cron line, or one of the @ shortcuts a CronJob accepts
CRON_RE = re.compile(r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$")
DEFAULT_PORT = 8080
DEFAULT_SIZE = "1Gi"
MAX_REPLICAS = 15
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # a DNS subdomain
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")
QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?$")


class InvalidSpecError(ValidationError):
    """A VaultAgent spec the operator refuses; the message says which field and why."""

    code = "invalid_spec"


@dataclass(frozen=True)
class SecretKeyRef:
    """One key of a Secret in the VaultAgent's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class TLSSpec:
    """Where the agents' server and client certificates come from.

    ``mode`` is ``operator`` (a CA per VaultAgent, made once by the operator), ``issuer`` (a
    cert-manager Issuer or ClusterIssuer signs them) or ``secret`` (existing TLS Secrets).
    """

    mode: str
    issuer_name: str | None = None
    issuer_kind: str = "Issuer"
    server_secret: str | None = None  # mode "secret" only: the user's Secrets
    client_secret: str | None = None
    cluster_domain: str = "cluster.local"


@dataclass(frozen=True)
class NetworkPolicySpec:
    """Who may reach the agents, and where they may connect to."""

    enabled: bool
    ingress_from: list[dict[str, Any]]
    control_plane_to: list[dict[str, Any]]
    store_to: list[dict[str, Any]]
    store_port: int
    extra_egress: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class BackupSpec:
    """A CronJob running ``keyvault agent backup`` into a volume claim."""

    schedule: str
    retention: int
    claim_name: str


@dataclass(frozen=True)
class Scheduling:
    """Where the pods may run (copied into the pod spec as given)."""

    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    affinity: dict[str, Any] | None  # replaces the operator's anti-affinity when given
    anti_affinity: str  # preferred | required, by node host name
    priority_class: str | None
    image_pull_secrets: list[str]


@dataclass(frozen=True)
class AgentSpec:
    """A checked VaultAgent spec with every default applied."""

    replicas: int
    image: str
    image_pull_policy: str
    port: int
    storage_size: str
    storage_class: str | None
    endpoint: str
    certificate_secret: str
    enrollment_token: SecretKeyRef | None
    master_key: SecretKeyRef
    store_type: str
    store_url: SecretKeyRef | None
    resources: dict[str, Any]
    log_level: str
    tls: TLSSpec = TLSSpec("operator")
    scheduling: Scheduling = Scheduling({}, [], None, "preferred", None, [])
    network_policy: NetworkPolicySpec = NetworkPolicySpec(True, [], [], [], DEFAULT_STORE_PORT)
    backup: BackupSpec | None = None


DEFAULT_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}


def parse_spec(name: str, spec: Mapping[str, Any]) -> AgentSpec:
    """Check a VaultAgent's spec and fill in defaults; InvalidSpecError names the bad field."""
    replicas = _int(spec.get("replicas", 1), "spec.replicas", 1, MAX_REPLICAS)
    port = _int(spec.get("port", DEFAULT_PORT), "spec.port", 1024, 65535)
    storage = _map(spec.get("storage"), "spec.storage")
    size = str(storage.get("size", DEFAULT_SIZE))
    if not QUANTITY_RE.match(size):
        raise InvalidSpecError(f"spec.storage.size {size!r} is not a quantity such as 10Gi")
    storage_class = storage.get("storageClass")
    cp = _map(spec.get("controlPlane"), "spec.controlPlane")
    endpoint = str(cp.get("endpoint", ""))
    if not endpoint.startswith("https://"):
        raise InvalidSpecError("spec.controlPlane.endpoint must be an https:// URL")
    store_type, store_url = _store(spec.get("store"), replicas)
    master = _ref(spec.get("masterKeyRef"), "spec.masterKeyRef", "master.key")
    if master is None:
        master = SecretKeyRef(f"{name}-master-key", "master.key")
    return AgentSpec(
        replicas=replicas,
        image=str(spec.get("image", DEFAULT_IMAGE)),
        image_pull_policy=_choice(spec, "imagePullPolicy", "IfNotPresent", PULL_POLICIES),
        port=port,
        storage_size=size,
        storage_class=_name(storage_class, "spec.storage.storageClass") if storage_class else None,
        endpoint=endpoint,
        certificate_secret=_name(cp.get("certificateRef"), "spec.controlPlane.certificateRef"),
        enrollment_token=_ref(
            cp.get("enrollmentTokenRef"), "spec.controlPlane.enrollmentTokenRef", "token"
        ),
        master_key=master,
        store_type=store_type,
        store_url=store_url,
        resources=dict(spec.get("resources") or DEFAULT_RESOURCES),
        log_level=_choice(spec, "logLevel", "INFO", LOG_LEVELS),
        tls=_tls(spec.get("tls")),
        scheduling=_scheduling(spec),
        network_policy=_network_policy(spec.get("networkPolicy")),
        backup=_backup(spec.get("backup"), store_type),
    )


def _tls(value: Any) -> TLSSpec:
    """``spec.tls``: ``{}`` (operator CA), ``{issuerRef}`` or ``{secretRef, clientSecretRef}``."""
    tls = _map(value, "spec.tls")
    domain = str(tls.get("clusterDomain", "cluster.local"))
    if not NAME_RE.match(domain) or len(domain) > 253:
        raise InvalidSpecError("spec.tls.clusterDomain must be a DNS name such as cluster.local")
    return replace(_tls_source(tls), cluster_domain=domain)


def _tls_source(tls: Mapping[str, Any]) -> TLSSpec:
    """Where the certificates come from: the operator, an issuer, or the user's Secrets."""
    issuer, secret = tls.get("issuerRef"), tls.get("secretRef")
    if issuer is not None and secret is not None:
        raise InvalidSpecError("spec.tls takes issuerRef or secretRef, not both")
    if issuer is not None:
        ref = _map(issuer, "spec.tls.issuerRef")
        kind = str(ref.get("kind", "Issuer"))
        if kind not in ISSUER_KINDS:
            raise InvalidSpecError("spec.tls.issuerRef.kind must be Issuer or ClusterIssuer")
        return TLSSpec("issuer", _name(ref.get("name"), "spec.tls.issuerRef.name"), kind)
    if secret is not None:
        client = tls.get("clientSecretRef")
        if client is None:
            raise InvalidSpecError(
                "spec.tls.secretRef needs spec.tls.clientSecretRef too: the TLS Secret of a "
                "client certificate from the same CA (the pods' health probe presents it)"
            )
        return TLSSpec(
            "secret",
            server_secret=_name(
                _map(secret, "spec.tls.secretRef").get("name"), "spec.tls.secretRef.name"
            ),
            client_secret=_name(
                _map(client, "spec.tls.clientSecretRef").get("name"),
                "spec.tls.clientSecretRef.name",
            ),
        )
    return TLSSpec("operator")


def _scheduling(spec: Mapping[str, Any]) -> Scheduling:
    """The scheduling fields, type-checked (their content is Kubernetes' own to validate)."""
    selector = _map(spec.get("nodeSelector"), "spec.nodeSelector")
    if not all(isinstance(v, str) for v in selector.values()):
        raise InvalidSpecError("spec.nodeSelector values must be strings")
    affinity = spec.get("affinity")
    pull = _list(spec.get("imagePullSecrets"), "spec.imagePullSecrets")
    priority = spec.get("priorityClassName")
    return Scheduling(
        node_selector={str(k): str(v) for k, v in selector.items()},
        tolerations=[
            dict(_map(t, "spec.tolerations[]"))
            for t in _list(spec.get("tolerations"), "spec.tolerations")
        ],
        affinity=dict(_map(affinity, "spec.affinity")) if affinity is not None else None,
        anti_affinity=_choice(spec, "podAntiAffinity", "preferred", ANTI_AFFINITY),
        priority_class=_name(priority, "spec.priorityClassName") if priority else None,
        image_pull_secrets=[_name(p, "spec.imagePullSecrets[]") for p in pull],
    )


def _network_policy(value: Any) -> NetworkPolicySpec:
    """``spec.networkPolicy``: on by default; peers are NetworkPolicyPeer objects."""
    policy = _map(value, "spec.networkPolicy")
    enabled = policy.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidSpecError("spec.networkPolicy.enabled must be true or false")

    def peers(field: str) -> list[dict[str, Any]]:
        where = f"spec.networkPolicy.{field}"
        return [dict(_map(p, f"{where}[]")) for p in _list(policy.get(field), where)]

    port = _int(
        policy.get("storePort", DEFAULT_STORE_PORT), "spec.networkPolicy.storePort", 1, 65535
    )
    extra = [
        dict(_map(r, "spec.networkPolicy.extraEgress[]"))
        for r in _list(policy.get("extraEgress"), "spec.networkPolicy.extraEgress")
    ]
    return NetworkPolicySpec(
        enabled, peers("ingressFrom"), peers("controlPlaneTo"), peers("storeTo"), port, extra
    )


def _backup(value: Any, store_type: str) -> BackupSpec | None:
    """``spec.backup``: a schedule, how many backups to keep and the claim they go to."""
    if value is None:
        return None
    backup = _map(value, "spec.backup")
    if store_type != "sqlite":
        raise InvalidSpecError(
            "spec.backup copies the SQLite store on the agent's volume; a postgresql store is "
            "backed up with PostgreSQL's own tools (pg_dump, base backups): remove spec.backup"
        )
    schedule = str(backup.get("schedule", ""))
    if not CRON_RE.match(schedule.strip()):
        raise InvalidSpecError(
            f"spec.backup.schedule {schedule!r} is not a cron line such as '0 3 * * *'"
        )
    return BackupSpec(
        schedule=schedule.strip(),
        retention=_int(backup.get("retention", 7), "spec.backup.retention", 1, 365),
        claim_name=_name(backup.get("claimName"), "spec.backup.claimName"),
    )


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidSpecError(f"{field} must be a list")
    return value


def _store(value: Any, replicas: int) -> tuple[str, SecretKeyRef | None]:
    """The store type and URL reference; several replicas need a shared PostgreSQL store."""
    store = _map(value, "spec.store")
    store_type = str(store.get("type", "sqlite"))
    if store_type not in ("sqlite", "postgresql"):
        raise InvalidSpecError("spec.store.type must be sqlite or postgresql")
    if replicas > 1 and store_type != "postgresql":
        raise InvalidSpecError(
            f"spec.replicas is {replicas} but spec.store.type is {store_type}: several agent "
            "replicas must share one PostgreSQL store; set spec.store.type: postgresql with "
            "spec.store.urlSecretRef, or spec.replicas: 1"
        )
    store_url = _ref(store.get("urlSecretRef"), "spec.store.urlSecretRef", "url")
    if store_type == "postgresql" and store_url is None:
        raise InvalidSpecError(
            "spec.store.urlSecretRef is required when spec.store.type is postgresql"
        )
    return store_type, store_url


def _choice(spec: Mapping[str, Any], field: str, default: str, allowed: tuple[str, ...]) -> str:
    value = spec.get(field, default)
    if value not in allowed:
        raise InvalidSpecError(f"spec.{field} must be one of {', '.join(allowed)}")
    return str(value)


def _int(value: Any, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidSpecError(f"{field} must be a whole number from {low} to {high}")
    return value


def _map(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidSpecError(f"{field} must be an object")
    return value


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value) or len(value) > 253:
        raise InvalidSpecError(
            f"{field} must be a Kubernetes name (lower-case letters, digits, - and .)"
        )
    return value


def _ref(value: Any, field: str, default_key: str) -> SecretKeyRef | None:
    """A ``{name, key}`` reference (``key`` defaulted), or None when absent."""
    if value is None:
        return None
    ref = _map(value, field)
    key = str(ref.get("key", default_key))
    if not KEY_RE.match(key):
        raise InvalidSpecError(f"{field}.key {key!r} is not a valid Secret key")
    return SecretKeyRef(_name(ref.get("name"), f"{field}.name"), key)
