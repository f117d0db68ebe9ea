"""The ``VaultSecret`` spec as the operator reads it, and the pure builders of its ``Secret``.

A VaultSecret names KeyVault secrets on an agent and the Kubernetes ``Secret`` they are copied
into. :func:`parse_spec` checks the spec (the CRD ``deploy/k8s/crd-vaultsecret.yaml`` enforces
the same rules at admission) and fills in defaults; :func:`render_data` turns the values read
from the agent into the Secret's keys for its type, refusing content that type cannot hold;
:func:`build_secret` makes the object to apply. Nothing here does I/O, and no message or
status built here ever holds a secret value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import ValidationError
from k8s_operator import API_VERSION, GROUP, MANAGER

KIND = "VaultSecret"
PLURAL = "vaultsecrets"
HASH_ANNOTATION = f"{GROUP}/content-hash"
SALT_ANNOTATION = f"{GROUP}/hash-salt"
RESTARTED_AT = f"{GROUP}/restartedAt"
RESTARTED_FOR = f"{GROUP}/restartedFor"  # "<secret>:<hash prefix>" of the content restarted for
TYPES = ("Opaque", "kubernetes.io/dockerconfigjson", "kubernetes.io/tls")
DEFAULT_REFRESH_TEXT = "60s"
MIN_REFRESH = 10
MAX_REFRESH = 86400
DEFAULT_MIN_INTERVAL_TEXT = "5m"
MAX_ITEMS = 64
MAX_DEPLOYMENTS = 100
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # a DNS subdomain
KEY_RE = re.compile(r"^[-._a-zA-Z0-9]+$")  # a Secret data key
SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
MAX_SECRET_NAME = 200  # the agent's own limits on a secret name
URL_RE = re.compile(r"^https://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?/?$")
ROLE_RE = re.compile(r"^[A-Za-z0-9][-_.A-Za-z0-9]{0,62}$")
DURATION_RE = re.compile(r"^([0-9]+)(s|m|h)$")
LABEL_RE = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?$"
)
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-_.A-Za-z0-9]{0,61}[A-Za-z0-9])?)?$")


class InvalidVaultSecretError(ValidationError):
    """A VaultSecret the operator refuses; the message names the field and what to change."""

    code = "invalid_spec"


@dataclass(frozen=True)
class KeyRef:
    """One key of a Secret in the VaultSecret's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class AgentSpec:
    """How to reach and log in to the agent: a URL or a VaultAgent, plus the credentials."""

    url: str | None
    vault_agent: str | None
    role: str
    ca: KeyRef
    client_cert_secret: str


@dataclass(frozen=True)
class Item:
    """One Secret key filled from one KeyVault secret."""

    key: str
    secret: str


@dataclass(frozen=True)
class RolloutSpec:
    """Which Deployments to restart when the content changes, how many at once, how often."""

    enabled: bool
    deployments: tuple[str, ...]
    selector: dict[str, str] | None
    batch_size: int
    min_interval: int


@dataclass(frozen=True)
class VaultSecretSpec:
    """A checked VaultSecret spec with every default applied."""

    agent: AgentSpec
    type: str
    items: tuple[Item, ...]
    target: str
    refresh_interval: int
    rollout: RolloutSpec


def parse_duration(value: Any, field: str) -> int:
    """Seconds of a duration such as ``90s``, ``5m`` or ``1h``."""
    match = DURATION_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidVaultSecretError(f"{field} must be a duration such as 30s, 5m or 1h")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


def parse_spec(name: str, spec: Mapping[str, Any]) -> VaultSecretSpec:
    """Check a VaultSecret's spec and fill in defaults; the error names the bad field."""
    _only(
        spec,
        "spec",
        {"agent", "vaultAgentRef", "type", "data", "target", "refreshInterval", "rollout"},
    )
    kind = spec.get("type", "Opaque")
    if kind not in TYPES:
        raise InvalidVaultSecretError(f"spec.type must be one of {', '.join(TYPES)}")
    refresh = parse_duration(
        spec.get("refreshInterval", DEFAULT_REFRESH_TEXT), "spec.refreshInterval"
    )
    if not MIN_REFRESH <= refresh <= MAX_REFRESH:
        raise InvalidVaultSecretError(
            f"spec.refreshInterval must be from {MIN_REFRESH}s to {MAX_REFRESH // 3600}h"
        )
    target = _map(spec.get("target"), "spec.target")
    _only(target, "spec.target", {"name"})
    return VaultSecretSpec(
        agent=_agent(spec),
        type=str(kind),
        items=_items(spec.get("data"), str(kind)),
        target=_name(target.get("name", name), "spec.target.name"),
        refresh_interval=refresh,
        rollout=_rollout(spec.get("rollout")),
    )


def _agent(spec: Mapping[str, Any]) -> AgentSpec:
    agent = _map(spec.get("agent"), "spec.agent")
    _only(agent, "spec.agent", {"url", "role", "caSecretRef", "clientCertSecretRef"})
    ref = spec.get("vaultAgentRef")
    url = agent.get("url")
    if (ref is None) == (url is None):
        raise InvalidVaultSecretError(
            "name the agent with exactly one of spec.vaultAgentRef.name (a VaultAgent in this "
            "namespace, recommended) or spec.agent.url"
        )
    vault_agent = None
    if ref is not None:
        ref_map = _map(ref, "spec.vaultAgentRef")
        _only(ref_map, "spec.vaultAgentRef", {"name"})
        vault_agent = _name(ref_map.get("name"), "spec.vaultAgentRef.name")
    if url is not None and (not isinstance(url, str) or not URL_RE.match(url)):
        raise InvalidVaultSecretError(
            "spec.agent.url must be https://<service>.<namespace>.svc:<port> (https, no path)"
        )
    role = agent.get("role")
    if not isinstance(role, str) or not ROLE_RE.match(role):
        raise InvalidVaultSecretError(
            "spec.agent.role must name the agent's JWT login role (letters, digits, - _ .)"
        )
    ca = _map(agent.get("caSecretRef"), "spec.agent.caSecretRef")
    _only(ca, "spec.agent.caSecretRef", {"name", "key"})
    if not ca:
        raise InvalidVaultSecretError(
            "spec.agent.caSecretRef is required: the Secret holding the agent's CA certificate"
        )
    key = ca.get("key", "ca.crt")
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise InvalidVaultSecretError(f"spec.agent.caSecretRef.key {key!r} is not a Secret key")
    cert = _map(agent.get("clientCertSecretRef"), "spec.agent.clientCertSecretRef")
    _only(cert, "spec.agent.clientCertSecretRef", {"name"})
    if not cert:
        raise InvalidVaultSecretError(
            "spec.agent.clientCertSecretRef is required: a kubernetes.io/tls Secret with the "
            "client certificate the agent's mutual TLS asks for"
        )
    return AgentSpec(
        url=url.rstrip("/") if isinstance(url, str) else None,
        vault_agent=vault_agent,
        role=role,
        ca=KeyRef(_name(ca.get("name"), "spec.agent.caSecretRef.name"), key),
        client_cert_secret=_name(cert.get("name"), "spec.agent.clientCertSecretRef.name"),
    )


def _items(value: Any, kind: str) -> tuple[Item, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidVaultSecretError("spec.data must list at least one {key, secret}")
    if len(value) > MAX_ITEMS:
        raise InvalidVaultSecretError(f"spec.data may list at most {MAX_ITEMS} keys")
    items = []
    for index, entry in enumerate(value):
        field = f"spec.data[{index}]"
        entry = _map(entry, field)
        _only(entry, field, {"key", "secret"})
        key, secret = entry.get("key"), entry.get("secret")
        if not isinstance(key, str) or not KEY_RE.match(key) or len(key) > 253:
            raise InvalidVaultSecretError(
                f"{field}.key must be a Secret key (letters, digits, - _ .)"
            )
        if (
            not isinstance(secret, str)
            or not SECRET_NAME_RE.match(secret)
            or len(secret) > MAX_SECRET_NAME
        ):
            raise InvalidVaultSecretError(
                f"{field}.secret must be a KeyVault secret name such as db/prod/password"
            )
        items.append(Item(key, secret))
    keys = [i.key for i in items]
    if len(set(keys)) != len(keys):
        raise InvalidVaultSecretError("spec.data lists the same key twice")
    if kind == "kubernetes.io/tls" and not {"tls.crt", "tls.key"} <= set(keys):
        missing = sorted({"tls.crt", "tls.key"} - set(keys))
        raise InvalidVaultSecretError(
            f"spec.type kubernetes.io/tls needs the keys tls.crt and tls.key; add {', '.join(missing)}"
        )
    if kind == "kubernetes.io/dockerconfigjson" and keys != [".dockerconfigjson"]:
        raise InvalidVaultSecretError(
            "spec.type kubernetes.io/dockerconfigjson takes exactly one key, .dockerconfigjson"
        )
    return tuple(items)


def _rollout(value: Any) -> RolloutSpec:
    rollout = _map(value, "spec.rollout")
    _only(
        rollout, "spec.rollout", {"enabled", "deployments", "selector", "batchSize", "minInterval"}
    )
    enabled = rollout.get("enabled", False)
    if not isinstance(enabled, bool):
        raise InvalidVaultSecretError("spec.rollout.enabled must be true or false")
    names = rollout.get("deployments")
    selector = rollout.get("selector")
    if names is not None and selector is not None:
        raise InvalidVaultSecretError(
            "spec.rollout takes deployments (names) or selector (labels), not both"
        )
    if enabled and names is None and selector is None:
        raise InvalidVaultSecretError(
            "spec.rollout.enabled needs spec.rollout.deployments or spec.rollout.selector"
        )
    deployments: tuple[str, ...] = ()
    if names is not None:
        if not isinstance(names, list) or not names or len(names) > MAX_DEPLOYMENTS:
            raise InvalidVaultSecretError(
                f"spec.rollout.deployments must list 1 to {MAX_DEPLOYMENTS} Deployment names"
            )
        deployments = tuple(_name(n, f"spec.rollout.deployments[{i}]") for i, n in enumerate(names))
    labels = None
    if selector is not None:
        selector = _map(selector, "spec.rollout.selector")
        _only(selector, "spec.rollout.selector", {"matchLabels"})
        labels = dict(_map(selector.get("matchLabels"), "spec.rollout.selector.matchLabels"))
        if not labels:
            raise InvalidVaultSecretError("spec.rollout.selector.matchLabels must not be empty")
        for k, v in labels.items():
            if not LABEL_RE.match(k) or not isinstance(v, str) or not LABEL_VALUE_RE.match(v):
                raise InvalidVaultSecretError(
                    f"spec.rollout.selector.matchLabels {k!r} is not a valid label"
                )
    batch = rollout.get("batchSize", 1)
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= MAX_DEPLOYMENTS:
        raise InvalidVaultSecretError(
            f"spec.rollout.batchSize must be a whole number from 1 to {MAX_DEPLOYMENTS}"
        )
    interval = parse_duration(
        rollout.get("minInterval", DEFAULT_MIN_INTERVAL_TEXT), "spec.rollout.minInterval"
    )
    if not 0 <= interval <= MAX_REFRESH:
        raise InvalidVaultSecretError("spec.rollout.minInterval must be from 0s to 24h")
    return RolloutSpec(enabled, deployments, labels, batch, interval)


def render_data(spec: VaultSecretSpec, values: Mapping[str, str]) -> dict[str, str]:
    """The Secret's keys (plain text, by key) from the values read for each item.

    A ``.dockerconfigjson`` must be a JSON object with an ``auths`` object, and TLS keys must
    be PEM; the messages name the key and the KeyVault secret, never the value.
    """
    data = {item.key: values[item.secret] for item in spec.items}
    if spec.type == "kubernetes.io/dockerconfigjson":
        _check_docker_config(data[".dockerconfigjson"], spec.items[0].secret)
    if spec.type == "kubernetes.io/tls":
        by_key = {i.key: i.secret for i in spec.items}
        for key, marker in (("tls.crt", "CERTIFICATE"), ("tls.key", "PRIVATE KEY")):
            if "-----BEGIN " not in data[key] or marker not in data[key]:
                raise InvalidVaultSecretError(
                    f"the KeyVault secret {by_key[key]!r} given as {key} is not a PEM "
                    f"{marker.lower()}; store the PEM text in it"
                )
    return data


def _check_docker_config(text: str, secret: str) -> None:
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
        problem = "is not JSON"
    else:
        problem = (
            ""
            if isinstance(doc, dict) and isinstance(doc.get("auths"), dict)
            else ('is JSON without an "auths" object')
        )
    if problem:
        raise InvalidVaultSecretError(
            f"the KeyVault secret {secret!r} given as .dockerconfigjson {problem}; store a "
            'docker config such as {"auths": {"registry.example.com": {"auth": "..."}}}'
        )


def content_hash(salt: str, kind: str, data: Mapping[str, str]) -> str:
    """A keyed hash of the Secret's content (type and data).

    Keyed with a random salt kept on the Secret itself, so the hash in the VaultSecret's
    status lets nobody who cannot read the Secret test guesses of its values.
    """
    canonical = json.dumps({"type": kind, "data": dict(sorted(data.items()))}, sort_keys=True)
    return hmac.new(salt.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def labels(owner: str) -> dict[str, str]:
    """The labels of a Secret made for the VaultSecret ``owner``."""
    return {
        "app.kubernetes.io/managed-by": MANAGER,
        "app.kubernetes.io/part-of": "keyvault",
        f"{GROUP}/vaultsecret": owner,
    }


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    """The controller ownerReference to the VaultSecret (GC deletes the Secret with it)."""
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_secret(
    body: Mapping[str, Any], spec: VaultSecretSpec, data: Mapping[str, str], salt: str, digest: str
) -> dict[str, Any]:
    """The Secret to server-side apply: typed, owned, labelled, annotated with its hash."""
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": spec.target,
            "namespace": meta["namespace"],
            "labels": labels(meta["name"]),
            "annotations": {HASH_ANNOTATION: digest, SALT_ANNOTATION: salt},
            "ownerReferences": [owner_reference(body)],
        },
        "type": spec.type,
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())},
    }


def uses_secret(deployment: Mapping[str, Any], secret: str) -> bool:
    """Whether a Deployment's pods read the Secret (volume, env, envFrom or pull secret)."""
    pod = deployment.get("spec", {}).get("template", {}).get("spec", {}) or {}
    for volume in pod.get("volumes") or []:
        if (volume.get("secret") or {}).get("secretName") == secret:
            return True
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("secret") or {}).get("name") == secret:
                return True
    if any(p.get("name") == secret for p in pod.get("imagePullSecrets") or []):
        return True
    containers = [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]
    for container in containers:
        for env in container.get("env") or []:
            if ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") == secret:
                return True
        for source in container.get("envFrom") or []:
            if (source.get("secretRef") or {}).get("name") == secret:
                return True
    return False


def restart_marker(target: str, digest: str) -> str:
    """The pod-template annotation value saying which content a restart was for."""
    return f"{target}:{digest[:16]}"


def batches(names: list[str], size: int) -> list[list[str]]:
    """``names`` cut into restart batches of at most ``size``, in order."""
    return [names[i : i + size] for i in range(0, len(names), size)]


def _map(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidVaultSecretError(f"{field} must be an object")
    return value


def _only(value: Mapping[str, Any], field: str, allowed: set[str]) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InvalidVaultSecretError(
            f"{field} has unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value) or len(value) > 253:
        raise InvalidVaultSecretError(
            f"{field} must be a Kubernetes name (lower-case letters, digits, - and .)"
        )
    return value
