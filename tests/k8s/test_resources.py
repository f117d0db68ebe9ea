"""The pure builders: spec checks, and what the StatefulSet, Services and ConfigMap hold."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from k8s_operator.crd import InvalidSpecError, parse_spec
from k8s_operator.resources import (
    ENROLLMENT_DIR,
    IDENTITY_DIR,
    INIT_SCRIPT,
    build_all,
    build_configmap,
    build_services,
    build_statefulset,
)
from tests.k8s.conftest import vault_agent


def _env(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_seed_example_without_a_shared_store_is_refused() -> None:
    seed = {
        "replicas": 3,
        "storage": {"size": "10Gi", "storageClass": "fast-ssd"},
        "controlPlane": {
            "endpoint": "https://api.keyvault.com",
            "certificateRef": "vault-client-cert",
        },
    }
    with pytest.raises(InvalidSpecError, match=r"replicas is 3 but spec\.store\.type is sqlite"):
        parse_spec("production-vault", seed)
    single = parse_spec("production-vault", {**seed, "replicas": 1})
    assert single.store_type == "sqlite"
    assert single.master_key.name == "production-vault-master-key"
    assert single.master_key.key == "master.key"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"replicas": 0}, "spec.replicas"),
        ({"replicas": True}, "spec.replicas"),
        ({"port": 80}, "spec.port"),
        ({"storage": {"size": "ten"}}, "spec.storage.size"),
        ({"controlPlane": {"endpoint": "http://x", "certificateRef": "c"}}, "https://"),
        (
            {"controlPlane": {"endpoint": "https://x", "certificateRef": "Bad_Name"}},
            "certificateRef",
        ),
        ({"store": {"type": "postgresql"}}, "urlSecretRef is required"),
        ({"store": {"type": "mysql"}}, "spec.store.type"),
        ({"masterKeyRef": {"name": "k", "key": "a/b"}}, "masterKeyRef.key"),
        ({"logLevel": "LOUD"}, "spec.logLevel"),
        ({"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy"),
    ],
)
def test_bad_specs_name_the_field(spec: dict, message: str) -> None:
    body = vault_agent(replicas=1, store={"type": "sqlite"})
    with pytest.raises(InvalidSpecError, match=message):
        parse_spec("v", {**body["spec"], **spec})


def test_statefulset_has_replicas_claims_secrets_and_owner() -> None:
    body = vault_agent()
    sts = build_statefulset(body, parse_spec("production-vault", body["spec"]))
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["serviceName"] == "production-vault-headless"
    claim = spec["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "10Gi"
    assert claim["storageClassName"] == "fast-ssd"
    assert sts["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "keyvault.io/v1",
            "kind": "VaultAgent",
            "name": "production-vault",
            "uid": "uid-1234",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    pod = spec["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["uplink-identity"]["secret"]["secretName"] == "vault-client-cert"
    assert volumes["uplink-identity"]["secret"]["optional"] is False
    assert volumes["master-key"]["secret"]["secretName"] == "vault-master"
    agent = pod["containers"][0]
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    assert mounts["uplink-identity"]["readOnly"] is True
    assert mounts["master-key"]["readOnly"] is True
    env = _env(agent)
    assert env["KEYVAULT_MASTER_KEY_FILE"] == "/etc/keyvault/master/master.key"
    assert env["KEYVAULT_CONTROL_PLANE_URL"] == "https://api.keyvault.com"
    assert env["KEYVAULT_STORAGE__URL"] == {"secretKeyRef": {"name": "vault-db", "key": "url"}}
    assert env["KEYVAULT_BIND"] == "0.0.0.0"


def test_pods_are_locked_down_and_probed_on_health() -> None:
    body = vault_agent(replicas=1, store={"type": "sqlite"})
    sts = build_statefulset(body, parse_spec("v", body["spec"]))
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in [*pod["initContainers"], *pod["containers"]]:
        sec = container["securityContext"]
        assert sec["readOnlyRootFilesystem"] is True
        assert sec["allowPrivilegeEscalation"] is False
        assert sec["capabilities"] == {"drop": ["ALL"]}
    agent = pod["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        # mutual TLS is required: the probe is the agent's own health check, which shows the
        # client certificate (a kubelet httpGet probe cannot)
        assert "httpGet" not in agent[probe]
        assert agent[probe]["exec"]["command"] == [
            "python",
            "-m",
            "agent.docker_entrypoint",
            "health",
        ]
    assert "KEYVAULT_STORAGE__URL" not in _env(agent)  # SQLite on the volume
    assert "storageClassName" in sts["spec"]["volumeClaimTemplates"][0]["spec"]


def test_services_select_the_pods_and_serve_the_port() -> None:
    body = vault_agent(port=9443)
    spec = parse_spec("production-vault", body["spec"])
    client, headless = build_services(body, spec)
    selector = build_statefulset(body, spec)["spec"]["selector"]["matchLabels"]
    assert client["metadata"]["name"] == "production-vault"
    assert headless["spec"]["clusterIP"] == "None"
    for svc in (client, headless):
        assert svc["spec"]["selector"] == selector
        assert svc["spec"]["ports"][0]["port"] == 9443
    assert [o["kind"] for o in build_all(body, spec)] == [
        "ConfigMap",
        "Service",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "StatefulSet",
    ]


def test_enrollment_token_is_mounted_and_identity_made_optional() -> None:
    body = vault_agent(
        replicas=1,
        store={"type": "sqlite"},
        controlPlane={
            "endpoint": "https://cp.example.com",
            "certificateRef": "edge-uplink",
            "enrollmentTokenRef": {"name": "edge-token"},
        },
    )
    pod = build_statefulset(body, parse_spec("v", body["spec"]))["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["enrollment-token"]["secret"]["items"] == [{"key": "token", "path": "token"}]
    assert volumes["uplink-identity"]["secret"]["optional"] is True
    init_mounts = {m["name"] for m in pod["initContainers"][0]["volumeMounts"]}
    assert "enrollment-token" in init_mounts
    assert "enrollment-token" not in {m["name"] for m in pod["containers"][0]["volumeMounts"]}


def _run_init(tmp_path: Path, identity: dict[str, str], pod: str = "v-0") -> str:
    """Run the real init script with /bin/sh and a fake `keyvault` that logs its arguments."""
    bindir, ident, data = tmp_path / "bin", tmp_path / "identity", tmp_path / "data"
    for folder in (bindir, ident, tmp_path / "token"):
        folder.mkdir(exist_ok=True)
    for name, text in identity.items():
        (ident / name).write_text(text)
    fake = bindir / "keyvault"
    fake.write_text(
        '#!/bin/sh\necho "$@" >> "$LOG"\n'
        'if [ "$2" = init ]; then mkdir -p "$KEYVAULT_DATA_DIR"; touch "$KEYVAULT_DATA_DIR/agent.yaml"; fi\n'
    )
    fake.chmod(0o755)
    script = INIT_SCRIPT.replace(IDENTITY_DIR, str(ident)).replace(
        ENROLLMENT_DIR, str(tmp_path / "token")
    )
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "LOG": str(tmp_path / "log"),
        "KEYVAULT_DATA_DIR": str(data),
        "KEYVAULT_MASTER_KEY_FILE": "/m/master.key",
        "KEYVAULT_PORT": "8080",
        "KEYVAULT_SERVICE_HOST": "v.ns.svc",
        "KEYVAULT_HEADLESS_HOST": "v-headless.ns.svc",
        "KEYVAULT_STORAGE__URL": "postgresql+psycopg://u:pw-s3cret@db/kv",
        "POD_NAME": pod,
        "CONTROL_PLANE_URL": "https://cp",
    }
    subprocess.run(["/bin/sh", "-c", script], env=env, check=True, timeout=10)
    return (tmp_path / "log").read_text() if (tmp_path / "log").exists() else ""


def test_init_script_initialises_once_and_seeds_the_uplink(tmp_path: Path) -> None:
    files = {"service-ca.pem": "ca", "client.key": "key", "client.crt": "crt", "state.json": "{}"}
    log = _run_init(tmp_path, files)
    assert log.splitlines() == [
        f"agent init --data-dir {tmp_path}/data --key-file /m/master.key --bind 0.0.0.0 --port 8080 "
        f"--token-file {tmp_path}/data/admin.token --storage-url-from-env"
    ]
    assert "pw-s3cret" not in log  # the store URL stays in the environment
    tls = tmp_path / "data" / "tls"
    assert {p.name: os.readlink(p) for p in tls.iterdir()} == {
        "ca.crt": "/etc/keyvault/tls/ca.crt",
        "client.crt": "/etc/keyvault/tls-client/tls.crt",
        "client.key": "/etc/keyvault/tls-client/tls.key",
    }
    uplink = tmp_path / "data" / "uplink"
    assert {p.name: p.read_text() for p in uplink.iterdir()} == files
    assert oct(os.stat(uplink / "client.key").st_mode & 0o777) == "0o600"
    assert _run_init(tmp_path, files) == log  # a restarted pod changes nothing


def test_later_replicas_join_the_vault_in_the_shared_store(tmp_path: Path) -> None:
    log = _run_init(tmp_path, {}, pod="v-2")
    first = log.splitlines()[0]
    assert first.startswith("agent init --data-dir") and first.endswith(
        "--storage-url-from-env --join"
    )


def test_init_script_enrolls_with_a_token_when_no_identity(tmp_path: Path) -> None:
    (tmp_path / "token").mkdir()
    (tmp_path / "token" / "token").write_text("kve_x")
    log = _run_init(tmp_path, {})
    assert log.splitlines()[-1] == "agent enroll --control-plane https://cp --name v-0"


def test_configmap_holds_the_script() -> None:
    cm = build_configmap(vault_agent())
    assert cm["metadata"]["name"] == "production-vault-scripts"
    assert cm["data"]["init.sh"] == INIT_SCRIPT


def test_backup_cronjob_runs_the_real_backup_and_keeps_the_newest(tmp_path: Path) -> None:
    """The CronJob's script with the real `keyvault agent backup` on a real SQLite folder."""
    from k8s_operator.resources import BACKUP_DIR, BACKUP_SCRIPT, build_backup_cronjob
    from tests.conftest import init_agent_dir

    body = vault_agent(
        replicas=1,
        store={"type": "sqlite"},
        backup={"schedule": "@daily", "retention": 2, "claimName": "vault-backups"},
    )
    job = build_backup_cronjob(body, parse_spec("v", body["spec"]))
    assert job is not None and job["spec"]["schedule"] == "@daily"
    pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    claims = {v["name"]: v.get("persistentVolumeClaim") for v in pod["volumes"]}
    assert claims["data"] == {"claimName": "data-production-vault-0"}
    assert claims["backup"] == {"claimName": "vault-backups"}
    assert pod["containers"][0]["command"] == ["/bin/sh", "-c", BACKUP_SCRIPT]
    data = init_agent_dir(tmp_path / "data").path
    out, bindir = tmp_path / "backups", tmp_path / "bin"
    out.mkdir()
    bindir.mkdir()
    (bindir / "date").write_text('#!/bin/sh\necho "$STAMP"\n')  # one distinct time per run
    (bindir / "date").chmod(0o755)
    venv_bin = Path(__file__).resolve().parents[2] / ".venv" / "bin"
    for stamp in ("20260101T030000Z", "20260102T030000Z", "20260103T030000Z"):
        env = {
            "PATH": f"{bindir}:{venv_bin}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "STAMP": stamp,
            "KEYVAULT_DATA_DIR": str(data),
            "KEYVAULT_BACKUP_RETENTION": "2",
        }
        script = BACKUP_SCRIPT.replace(BACKUP_DIR, str(out))
        done = subprocess.run(
            ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    kept = sorted(p.name for p in out.iterdir())
    assert kept == ["20260102T030000Z", "20260103T030000Z"]
    assert (out / kept[-1] / "store.db").stat().st_size > 0


def test_pdb_network_policy_and_scheduling() -> None:
    from k8s_operator.resources import build_network_policy, build_pdb

    body = vault_agent(
        controlPlane={"endpoint": "https://cp.example.com:8443/agents", "certificateRef": "c"},
        nodeSelector={"disk": "ssd"},
        tolerations=[{"key": "vault", "operator": "Exists"}],
        priorityClassName="vault-critical",
        imagePullSecrets=["regcred"],
        networkPolicy={"ingressFrom": [{"namespaceSelector": {"matchLabels": {"a": "b"}}}]},
    )
    spec = parse_spec("production-vault", body["spec"])
    pdb = build_pdb(body)
    assert pdb["spec"]["maxUnavailable"] == 1
    policy = build_network_policy(body, spec)["spec"]
    assert policy["ingress"] == [
        {
            "ports": [{"protocol": "TCP", "port": 8080}],
            "from": [{"namespaceSelector": {"matchLabels": {"a": "b"}}}],
        }
    ]
    ports = [r["ports"] for r in policy["egress"]]
    assert [{"protocol": "TCP", "port": 8443}] in ports  # the control plane's port
    assert [{"protocol": "TCP", "port": 5432}] in ports  # the PostgreSQL store
    pod = build_statefulset(body, spec)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"] == [{"key": "vault", "operator": "Exists"}]
    assert pod["priorityClassName"] == "vault-critical"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    required = vault_agent(podAntiAffinity="required")
    pod = build_statefulset(required, parse_spec("v", required["spec"]))["spec"]["template"]["spec"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    sqlite = vault_agent(replicas=1, store={"type": "sqlite"}, networkPolicy={"enabled": False})
    sq = parse_spec("v", sqlite["spec"])
    assert [o["kind"] for o in build_all(sqlite, sq)].count("NetworkPolicy") == 0
    only_dns_and_cp = vault_agent(replicas=1, store={"type": "sqlite"})
    egress = build_network_policy(only_dns_and_cp, parse_spec("v", only_dns_and_cp["spec"]))
    assert len(egress["spec"]["egress"]) == 2  # no store egress for SQLite


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"backup": {"schedule": "daily", "claimName": "b"}}, "spec.backup.schedule"),
        ({"backup": {"schedule": "@daily"}}, "spec.backup.claimName"),
        ({"tls": {"issuerRef": {"name": "x", "kind": "Vault"}}}, "Issuer or ClusterIssuer"),
        ({"tls": {"secretRef": {"name": "x"}}}, "clientSecretRef"),
        ({"tls": {"secretRef": {"name": "x"}, "issuerRef": {"name": "y"}}}, "not both"),
        ({"podAntiAffinity": "sometimes"}, "spec.podAntiAffinity"),
        ({"tolerations": {"key": "x"}}, "spec.tolerations must be a list"),
        ({"nodeSelector": {"a": 1}}, "nodeSelector values"),
        ({"networkPolicy": {"enabled": "yes"}}, "networkPolicy.enabled"),
        ({"imagePullSecrets": ["Bad_Name"]}, "imagePullSecrets"),
    ],
)
def test_bad_new_fields_name_the_field(spec: dict, message: str) -> None:
    body = vault_agent(replicas=1, store={"type": "sqlite"})
    with pytest.raises(InvalidSpecError, match=message):
        parse_spec("v", {**body["spec"], **spec})


def test_backup_of_a_postgresql_store_is_refused() -> None:
    body = vault_agent(backup={"schedule": "@daily", "claimName": "b"})
    with pytest.raises(InvalidSpecError, match="PostgreSQL's own tools"):
        parse_spec("v", body["spec"])


def test_extra_egress_rules_are_added() -> None:
    from k8s_operator.resources import build_network_policy

    rule = {
        "to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}],
        "ports": [{"protocol": "TCP", "port": 5433}],
    }
    body = vault_agent(networkPolicy={"extraEgress": [rule]})
    policy = build_network_policy(body, parse_spec("v", body["spec"]))
    assert policy["spec"]["egress"][-1] == rule
    with pytest.raises(InvalidSpecError, match="extraEgress must be a list"):
        parse_spec("v", {**body["spec"], "networkPolicy": {"extraEgress": rule}})
    with pytest.raises(InvalidSpecError, match="clusterDomain"):
        parse_spec("v", {**body["spec"], "tls": {"clusterDomain": "Not A Domain"}})
