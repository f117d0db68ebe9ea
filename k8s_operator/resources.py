"""Pure builders of the objects a VaultAgent owns: ConfigMap, Services and StatefulSet.

No API calls here: each function turns a checked :class:`~k8s_operator.crd.AgentSpec` into a
manifest (a plain dict), so tests can validate every one with kubernetes-validate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from k8s_operator import API_VERSION, KIND, MANAGER
from k8s_operator.crd import AgentSpec

DATA_MOUNT = "/var/lib/keyvault"
DATA_DIR = f"{DATA_MOUNT}/data"
MASTER_DIR = "/etc/keyvault/master"
MASTER_FILE = f"{MASTER_DIR}/master.key"
IDENTITY_DIR = "/etc/keyvault/uplink"
ENROLLMENT_DIR = "/etc/keyvault/enrollment"
SCRIPTS_DIR = "/etc/keyvault/scripts"
TMP_DIR = "/tmp"  # noqa: S108 - an in-memory emptyDir, private to the pod
HEALTH_PATH = "/api/v1/health"
USER_ID = 10001
UPLINK_FILES = ("service-ca.pem", "client.key", "client.crt", "state.json")  # state.json last

# Runs in the init container: create the data folder once (or join the shared store), then seed the uplink identity from
# the certificate Secret (or enroll with a token). Idempotent, so a restarted pod passes it.
INIT_SCRIPT = f"""#!/bin/sh
set -eu
umask 077
if [ ! -f "$KEYVAULT_DATA_DIR/agent.yaml" ]; then
  set -- --data-dir "$KEYVAULT_DATA_DIR" --key-file "$KEYVAULT_MASTER_KEY_FILE" \\
    --bind 0.0.0.0 --port "$KEYVAULT_PORT" --hostname "$KEYVAULT_SERVICE_HOST" \\
    --hostname "$POD_NAME.$KEYVAULT_HEADLESS_HOST" --token-file "$KEYVAULT_DATA_DIR/admin.token"
  if [ -n "${{KEYVAULT_STORAGE__URL:-}}" ]; then
    set -- "$@" --storage-url "$KEYVAULT_STORAGE__URL"
    # replicas after the first join the vault the first made in the shared store (pods start
    # in order: the StatefulSet's OrderedReady policy)
    case "$POD_NAME" in *-0) ;; *) set -- "$@" --join ;; esac
  fi
  keyvault agent init "$@"
fi
uplink="$KEYVAULT_DATA_DIR/uplink"
if [ ! -f "$uplink/state.json" ] && [ -f "{IDENTITY_DIR}/state.json" ]; then
  mkdir -p "$uplink"
  for f in {" ".join(UPLINK_FILES)}; do cp "{IDENTITY_DIR}/$f" "$uplink/$f"; done
elif [ ! -f "$uplink/state.json" ] && [ -f "{ENROLLMENT_DIR}/token" ]; then
  KEYVAULT_ENROLLMENT_TOKEN="$(cat "{ENROLLMENT_DIR}/token")" \\
    keyvault agent enroll --control-plane "$CONTROL_PLANE_URL" --name "$POD_NAME"
fi
"""


def labels(name: str) -> dict[str, str]:
    """The labels on everything a VaultAgent owns (the selector uses the first two)."""
    return {
        "app.kubernetes.io/name": "keyvault-agent",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "vault-agent",
        "app.kubernetes.io/managed-by": MANAGER,
    }


def selector_labels(name: str) -> dict[str, str]:
    """The labels that select a VaultAgent's pods."""
    return {k: v for k, v in labels(name).items() if k.endswith(("/name", "/instance"))}


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to the VaultAgent, so deleting it deletes what it owns."""
    meta = owner["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(owner: Mapping[str, Any], name: str) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "name": name,
        "namespace": meta["namespace"],
        "labels": labels(meta["name"]),
        "ownerReferences": [owner_reference(owner)],
    }


def headless_name(name: str) -> str:
    """Name of the headless Service that gives each pod a stable DNS name."""
    return f"{name}-headless"


def build_configmap(owner: Mapping[str, Any]) -> dict[str, Any]:
    """The ConfigMap holding the init script."""
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, f"{name}-scripts"),
        "data": {"init.sh": INIT_SCRIPT},
    }


def build_services(owner: Mapping[str, Any], spec: AgentSpec) -> list[dict[str, Any]]:
    """The client Service (``<name>``) and the headless one the StatefulSet names."""
    name = owner["metadata"]["name"]
    port = {"name": "https", "port": spec.port, "targetPort": "https", "protocol": "TCP"}
    client = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, name),
        "spec": {"type": "ClusterIP", "selector": selector_labels(name), "ports": [port]},
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, headless_name(name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(name),
            "ports": [port],
        },
    }
    return [client, headless]


def build_statefulset(owner: Mapping[str, Any], spec: AgentSpec) -> dict[str, Any]:
    """The StatefulSet running ``spec.replicas`` agents, one volume claim each."""
    name = owner["metadata"]["name"]
    claim: dict[str, Any] = {
        "metadata": {"name": "data", "labels": labels(name)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage_size}},
        },
    }
    if spec.storage_class:
        claim["spec"]["storageClassName"] = spec.storage_class
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(owner, name),
        "spec": {
            "replicas": spec.replicas,
            "serviceName": headless_name(name),
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain",
                "whenScaled": "Retain",
            },
            "selector": {"matchLabels": selector_labels(name)},
            "template": _pod_template(owner, spec),
            "volumeClaimTemplates": [claim],
        },
    }


def _pod_template(owner: Mapping[str, Any], spec: AgentSpec) -> dict[str, Any]:
    name = owner["metadata"]["name"]
    digest = hashlib.sha256(INIT_SCRIPT.encode()).hexdigest()[:16]
    return {
        "metadata": {
            "labels": labels(name),
            "annotations": {"keyvault.io/init-script": digest},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 30,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": USER_ID,
                "runAsGroup": USER_ID,
                "fsGroup": USER_ID,
                "fsGroupChangePolicy": "OnRootMismatch",
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "initContainers": [_init_container(owner, spec)],
            "containers": [_agent_container(owner, spec)],
            "volumes": _volumes(owner, spec),
        },
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(owner: Mapping[str, Any], spec: AgentSpec) -> list[dict[str, Any]]:
    """The agent's settings as ``KEYVAULT_`` variables (see agent/settings.py)."""
    name = owner["metadata"]["name"]
    namespace = owner["metadata"]["namespace"]
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "KEYVAULT_DATA_DIR", "value": DATA_DIR},
        {"name": "KEYVAULT_MASTER_KEY_FILE", "value": MASTER_FILE},
        {"name": "KEYVAULT_BIND", "value": "0.0.0.0"},
        {"name": "KEYVAULT_PORT", "value": str(spec.port)},
        {"name": "KEYVAULT_CONTROL_PLANE_URL", "value": spec.endpoint},
        {"name": "CONTROL_PLANE_URL", "value": spec.endpoint},
        {"name": "KEYVAULT_LOG_FORMAT", "value": "json"},
        {"name": "KEYVAULT_LOG_LEVEL", "value": spec.log_level},
        {"name": "KEYVAULT_SERVICE_HOST", "value": f"{name}.{namespace}.svc"},
        {"name": "KEYVAULT_HEADLESS_HOST", "value": f"{headless_name(name)}.{namespace}.svc"},
        {"name": "HOME", "value": TMP_DIR},
    ]
    if spec.store_url is not None:
        ref = {"name": spec.store_url.name, "key": spec.store_url.key}
        env.append({"name": "KEYVAULT_STORAGE__URL", "valueFrom": {"secretKeyRef": ref}})
    return env


def _mounts() -> list[dict[str, Any]]:
    return [
        {"name": "data", "mountPath": DATA_MOUNT},
        {"name": "master-key", "mountPath": MASTER_DIR, "readOnly": True},
        {"name": "uplink-identity", "mountPath": IDENTITY_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": TMP_DIR},
    ]


def _init_container(owner: Mapping[str, Any], spec: AgentSpec) -> dict[str, Any]:
    mounts = [*_mounts(), {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True}]
    if spec.enrollment_token is not None:
        mounts.append({"name": "enrollment-token", "mountPath": ENROLLMENT_DIR, "readOnly": True})
    return {
        "name": "prepare",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["/bin/sh", f"{SCRIPTS_DIR}/init.sh"],
        "env": _env(owner, spec),
        "volumeMounts": mounts,
        "securityContext": _container_security(),
        "resources": spec.resources,
    }


def _agent_container(owner: Mapping[str, Any], spec: AgentSpec) -> dict[str, Any]:
    probe = {"httpGet": {"path": HEALTH_PATH, "port": "https", "scheme": "HTTPS"}}
    return {
        "name": "agent",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["keyvault", "agent", "run"],
        "ports": [{"name": "https", "containerPort": spec.port, "protocol": "TCP"}],
        "env": _env(owner, spec),
        "volumeMounts": _mounts(),
        "securityContext": _container_security(),
        "resources": spec.resources,
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 60},
        "readinessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 20, "failureThreshold": 3},
    }


def _volumes(owner: Mapping[str, Any], spec: AgentSpec) -> list[dict[str, Any]]:
    name = owner["metadata"]["name"]
    master = {
        "secretName": spec.master_key.name,
        "defaultMode": 0o440,
        "items": [{"key": spec.master_key.key, "path": "master.key"}],
    }
    volumes: list[dict[str, Any]] = [
        {"name": "master-key", "secret": master},
        {
            "name": "uplink-identity",
            # with an enrollment token the identity Secret may not exist yet
            "secret": {
                "secretName": spec.certificate_secret,
                "defaultMode": 0o440,
                "optional": spec.enrollment_token is not None,
            },
        },
        {"name": "scripts", "configMap": {"name": f"{name}-scripts", "defaultMode": 0o555}},
        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    if spec.enrollment_token is not None:
        token = spec.enrollment_token
        items = [{"key": token.key, "path": "token"}]
        volumes.append(
            {
                "name": "enrollment-token",
                "secret": {"secretName": token.name, "defaultMode": 0o440, "items": items},
            }
        )
    return volumes


def build_all(owner: Mapping[str, Any], spec: AgentSpec) -> list[dict[str, Any]]:
    """Every object a VaultAgent owns, in the order they are applied."""
    return [build_configmap(owner), *build_services(owner, spec), build_statefulset(owner, spec)]
