"""Pure builders of the objects a VaultAgent owns: ConfigMap, Services, StatefulSet,
PodDisruptionBudget, NetworkPolicy and the optional backup CronJob (TLS objects: tls.py).

No API calls here: each function turns a checked :class:`~k8s_operator.crd.AgentSpec` into a
manifest (a plain dict), so tests can validate every one with kubernetes-validate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from k8s_operator import API_VERSION, KIND, MANAGER
from k8s_operator.crd import AgentSpec, TLSSpec

DATA_MOUNT = "/var/lib/keyvault"
DATA_DIR = f"{DATA_MOUNT}/data"
MASTER_DIR = "/etc/keyvault/master"
MASTER_FILE = f"{MASTER_DIR}/master.key"
IDENTITY_DIR = "/etc/keyvault/uplink"
ENROLLMENT_DIR = "/etc/keyvault/enrollment"
TLS_DIR = "/etc/keyvault/tls"  # server certificate, its key and the CA (tls.crt, tls.key, ca.crt)
CLIENT_TLS_DIR = "/etc/keyvault/tls-client"  # the health probe's client certificate
BACKUP_DIR = "/backup"
SCRIPTS_DIR = "/etc/keyvault/scripts"
TMP_DIR = "/tmp"  # noqa: S108 - an in-memory emptyDir, private to the pod
HEALTH_PATH = "/api/v1/health"
HEALTH_COMMAND = [
    "python",
    "-m",
    "agent.docker_entrypoint",
    "health",
]  # GET HEALTH_PATH over mutual TLS
USER_ID = 10001
UPLINK_FILES = ("service-ca.pem", "client.key", "client.crt", "state.json")  # state.json last

# Runs in the init container: create the data folder once (or join the shared store), then seed the uplink identity from
# the certificate Secret (or enroll with a token). Idempotent, so a restarted pod passes it.
INIT_SCRIPT = f"""#!/bin/sh
set -eu
umask 077
if [ ! -f "$KEYVAULT_DATA_DIR/agent.yaml" ]; then
  set -- --data-dir "$KEYVAULT_DATA_DIR" --key-file "$KEYVAULT_MASTER_KEY_FILE" \\
    --bind 0.0.0.0 --port "$KEYVAULT_PORT" --token-file "$KEYVAULT_DATA_DIR/admin.token"
  if [ -n "${{KEYVAULT_STORAGE__URL:-}}" ]; then
    # the URL and its password stay in the environment (a secretKeyRef): not on this command
    # line, and agent.yaml gets the URL without the password
    set -- "$@" --storage-url-from-env
    # replicas after the first join the vault the first made in the shared store (pods start
    # in order: the StatefulSet's OrderedReady policy)
    case "$POD_NAME" in *-0) ;; *) set -- "$@" --join ;; esac
  fi
  keyvault agent init "$@"
elif [ -n "${{KEYVAULT_STORAGE__URL:-}}" ]; then
  # a folder made by an older operator has the URL with its password in agent.yaml: remove
  # the password (the variable gives the agent the full URL)
  sed -i -E "s#^(  url: '?[a-z0-9+]+://[^:/@]+):[^@]*@#\\\\1@#" "$KEYVAULT_DATA_DIR/agent.yaml"
fi
# The agent serves the mounted certificate (KEYVAULT_TLS__* variables); the health probe reads
# the CA and its client certificate from the data folder: links follow renewed Secrets.
tls="$KEYVAULT_DATA_DIR/tls"
mkdir -p "$tls"
rm -f "$tls/ca.key" "$tls/server.crt" "$tls/server.key"
ln -sf "{TLS_DIR}/ca.crt" "$tls/ca.crt"
ln -sf "{CLIENT_TLS_DIR}/tls.crt" "$tls/client.crt"
ln -sf "{CLIENT_TLS_DIR}/tls.key" "$tls/client.key"
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


def metadata(owner: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Name, namespace, labels and the owner reference of an object the VaultAgent owns."""
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


def tls_secret_names(name: str, tls: TLSSpec | None) -> tuple[str, str]:
    """The Secrets the pods mount: (server certificate, probe's client certificate)."""
    if tls is not None and tls.mode == "secret":
        return str(tls.server_secret), str(tls.client_secret)
    return f"{name}-tls", f"{name}-client-tls"


def build_configmap(owner: Mapping[str, Any]) -> dict[str, Any]:
    """The ConfigMap holding the init script."""
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, f"{name}-scripts"),
        "data": {"init.sh": INIT_SCRIPT},
    }


def build_services(owner: Mapping[str, Any], spec: AgentSpec) -> list[dict[str, Any]]:
    """The client Service (``<name>``) and the headless one the StatefulSet names."""
    name = owner["metadata"]["name"]
    port = {"name": "https", "port": spec.port, "targetPort": "https", "protocol": "TCP"}
    client = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, name),
        "spec": {"type": "ClusterIP", "selector": selector_labels(name), "ports": [port]},
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, headless_name(name)),
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
        "metadata": metadata(owner, name),
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
            "securityContext": _pod_security(),
            "initContainers": [_init_container(owner, spec)],
            "containers": [_agent_container(owner, spec)],
            "volumes": _volumes(owner, spec),
            **_scheduling(name, spec),
        },
    }


def _scheduling(name: str, spec: AgentSpec) -> dict[str, Any]:
    """nodeSelector, tolerations, affinity, priority class and pull secrets of the pods.

    Without ``spec.affinity`` the replicas are spread over nodes (host name anti-affinity,
    preferred unless ``spec.podAntiAffinity: required``), so one node's loss takes one replica.
    """
    sched = spec.scheduling
    term = {
        "labelSelector": {"matchLabels": selector_labels(name)},
        "topologyKey": "kubernetes.io/hostname",
    }
    if sched.anti_affinity == "required":
        anti: dict[str, Any] = {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
    else:
        weighted = {"weight": 100, "podAffinityTerm": term}
        anti = {"preferredDuringSchedulingIgnoredDuringExecution": [weighted]}
    out: dict[str, Any] = {"affinity": sched.affinity or {"podAntiAffinity": anti}}
    if sched.node_selector:
        out["nodeSelector"] = dict(sched.node_selector)
    if sched.tolerations:
        out["tolerations"] = [dict(t) for t in sched.tolerations]
    if sched.priority_class:
        out["priorityClassName"] = sched.priority_class
    if sched.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": n} for n in sched.image_pull_secrets]
    return out


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "fsGroup": USER_ID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
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
    """The agent's settings as ``KEYVAULT_`` variables (see agent/settings.py).

    The store URL (with its password) comes only from the Secret, as ``KEYVAULT_STORAGE__URL``:
    never in the pod spec, on a command line, or in a file on the volume.
    """
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
        # the certificate from the VaultAgent's CA (or issuer, or Secret) replaces the one
        # `init` made: every replica serves the same Service names under one CA
        {"name": "KEYVAULT_TLS__CERT_FILE", "value": f"{TLS_DIR}/tls.crt"},
        {"name": "KEYVAULT_TLS__KEY_FILE", "value": f"{TLS_DIR}/tls.key"},
        {"name": "KEYVAULT_TLS__CLIENT_CA_FILE", "value": f"{TLS_DIR}/ca.crt"},
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
        {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
        {"name": "tls-client", "mountPath": CLIENT_TLS_DIR, "readOnly": True},
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
    # the agent requires client certificates, which a kubelet httpGet probe cannot show: the
    # probe runs the agent's own health check, which presents the admin client certificate
    probe = {"exec": {"command": HEALTH_COMMAND}, "timeoutSeconds": 5}
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
    server, client = tls_secret_names(name, spec.tls)
    for volume, secret in (("tls", server), ("tls-client", client)):
        items = [{"key": k, "path": k} for k in ("tls.crt", "tls.key", "ca.crt")]
        volumes.append(
            {
                "name": volume,
                "secret": {"secretName": secret, "defaultMode": 0o440, "items": items},
            }
        )
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


def build_pdb(owner: Mapping[str, Any]) -> dict[str, Any]:
    """A PodDisruptionBudget: a drain or upgrade takes at most one agent down at a time."""
    name = owner["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(owner, name),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(name)}},
    }


def _endpoint_port(endpoint: str) -> int:
    """The TCP port of the control plane's https:// URL (443 unless it names one)."""
    authority = endpoint.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    host_port = authority.rsplit("]", 1)[-1]
    if ":" in host_port and host_port.rsplit(":", 1)[1].isdigit():
        return int(host_port.rsplit(":", 1)[1])
    return 443


def build_network_policy(owner: Mapping[str, Any], spec: AgentSpec) -> dict[str, Any]:
    """Ingress only on the agent port, from the peers in ``spec.networkPolicy.ingressFrom``
    (default: pods of the same namespace); egress only to DNS, the control plane's port and (with a
    PostgreSQL store) the store's port, each limited to the peers named in the spec."""
    name = owner["metadata"]["name"]
    policy = spec.network_policy

    def rule(peers: list[dict[str, Any]], port: int, key: str) -> dict[str, Any]:
        out: dict[str, Any] = {"ports": [{"protocol": "TCP", "port": port}]}
        if peers:
            out[key] = [dict(p) for p in peers]
        return out

    # without ingressFrom: the pods of the VaultAgent's own namespace only
    ingress = [rule(policy.ingress_from or [{"podSelector": {}}], spec.port, "from")]
    dns = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    egress = [dns, rule(policy.control_plane_to, _endpoint_port(spec.endpoint), "to")]
    if spec.store_type == "postgresql":
        egress.append(rule(policy.store_to, policy.store_port, "to"))
    # e.g. the databases whose roles the agent rotates (agent.yaml rotation.postgres)
    egress += [dict(r) for r in policy.extra_egress]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(owner, name),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


# Runs in the backup CronJob: a consistent copy of the SQLite store and the audit log, then the
# oldest copies beyond the retention count are removed.
BACKUP_SCRIPT = f"""set -eu
umask 077
out="{BACKUP_DIR}/$(date -u +%Y%m%dT%H%M%SZ)"
keyvault agent backup --data-dir "$KEYVAULT_DATA_DIR" --out "$out"
ls -1d {BACKUP_DIR}/*Z 2>/dev/null | sort -r | tail -n +$((KEYVAULT_BACKUP_RETENTION + 1)) |
  while read -r old; do rm -rf "$old"; done
"""


def build_backup_cronjob(owner: Mapping[str, Any], spec: AgentSpec) -> dict[str, Any] | None:
    """A CronJob running ``keyvault agent backup`` on the schedule (None without spec.backup).

    The job mounts replica 0's data claim (ReadWriteOnce), so it is scheduled on that pod's
    node; ``keyvault agent backup`` is safe while the agent runs (SQLite's online backup).
    """
    backup = spec.backup
    if backup is None:
        return None
    name = owner["metadata"]["name"]
    container = {
        "name": "backup",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["/bin/sh", "-c", BACKUP_SCRIPT],
        "env": [
            {"name": "KEYVAULT_DATA_DIR", "value": DATA_DIR},
            {"name": "KEYVAULT_BACKUP_RETENTION", "value": str(backup.retention)},
            {"name": "HOME", "value": TMP_DIR},
        ],
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_MOUNT},
            {"name": "backup", "mountPath": BACKUP_DIR},
            {"name": "tmp", "mountPath": TMP_DIR},
            # the data folder's tls/ links point here: the backup copies what they name
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "tls-client", "mountPath": CLIENT_TLS_DIR, "readOnly": True},
        ],
        "securityContext": _container_security(),
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }
    same_node = {
        "labelSelector": {
            "matchLabels": {
                **selector_labels(name),
                "statefulset.kubernetes.io/pod-name": f"{name}-0",
            }
        },
        "topologyKey": "kubernetes.io/hostname",
    }
    pod: dict[str, Any] = {
        "restartPolicy": "OnFailure",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(),
        "affinity": {
            "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [same_node]}
        },
        "containers": [container],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": f"data-{name}-0"}},
            {"name": "backup", "persistentVolumeClaim": {"claimName": backup.claim_name}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            *[v for v in _volumes(owner, spec) if v["name"] in ("tls", "tls-client")],
        ],
    }
    sched = spec.scheduling
    if sched.tolerations:
        pod["tolerations"] = [dict(t) for t in sched.tolerations]
    if sched.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in sched.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": metadata(owner, f"{name}-backup"),
        "spec": {
            "schedule": backup.schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels(name)},
                "spec": {
                    "backoffLimit": 2,
                    "template": {"metadata": {"labels": labels(name)}, "spec": pod},
                },
            },
        },
    }


def build_all(owner: Mapping[str, Any], spec: AgentSpec) -> list[dict[str, Any]]:
    """Every object a VaultAgent owns (TLS objects aside: tls.py), in the order they are applied.

    The StatefulSet is last: handlers read the rollout from the last applied object.
    """
    objects = [build_configmap(owner), *build_services(owner, spec), build_pdb(owner)]
    if spec.network_policy.enabled:
        objects.append(build_network_policy(owner, spec))
    cronjob = build_backup_cronjob(owner, spec)
    if cronjob is not None:
        objects.append(cronjob)
    return [*objects, build_statefulset(owner, spec)]
