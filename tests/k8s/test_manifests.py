"""Every manifest, made by the operator or shipped in deploy/k8s, checked against Kubernetes'
own schemas with kubernetes-validate (strict: unknown fields fail); VaultAgent examples are
checked against the CRD's openAPIV3Schema with jsonschema."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from k8s_operator.api import PATHS
from k8s_operator.crd import parse_spec
from k8s_operator.handlers import OWNED
from k8s_operator.resources import build_all
from k8s_operator.tls import client_secret, load_ca, new_ca_secret, server_secret
from tests.k8s.conftest import DEPLOY, vault_agent

KUBE_VERSION = kubernetes_validate.latest_version()  # 1.37.0 with kubernetes-validate 1.37
OLDEST_SUPPORTED = "1.29.0"  # the CRD's CEL rules need 1.29+ (deploy/k8s/README.md)


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _crd_schema() -> dict[str, Any]:
    (crd,) = _docs("crd.yaml")
    return to_json_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def to_json_schema(node: Any) -> Any:
    """A structural schema as JSON Schema: x-kubernetes-* extensions dropped, int-or-string kept."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        out.get("type") == "object"
        and "properties" in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out.setdefault("additionalProperties", False)  # the API server prunes unknown fields
    return out


BODIES = {
    "shared-postgres": vault_agent(),
    "single-sqlite": vault_agent(replicas=1, store={"type": "sqlite"}, storage={"size": "1Gi"}),
    "with-token": vault_agent(
        replicas=1,
        store={"type": "sqlite"},
        controlPlane={
            "endpoint": "https://cp.example.com",
            "certificateRef": "edge-uplink",
            "enrollmentTokenRef": {"name": "edge-token", "key": "t"},
        },
        resources={"requests": {"cpu": "50m", "memory": 64}},
    ),
    # every optional field at once: backup, scheduling, network peers, a cert-manager issuer
    "all-options": vault_agent(
        replicas=1,
        store={"type": "sqlite"},
        tls={"issuerRef": {"name": "vault-issuer", "kind": "ClusterIssuer"}},
        backup={"schedule": "0 3 * * *", "retention": 14, "claimName": "vault-backups"},
        nodeSelector={"kubernetes.io/os": "linux"},
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "vault", "effect": "NoSchedule"}
        ],
        podAntiAffinity="required",
        priorityClassName="vault-critical",
        imagePullSecrets=["registry-login"],
        networkPolicy={
            "ingressFrom": [
                {"namespaceSelector": {"matchLabels": {"team": "payments"}}},
                {"podSelector": {"matchLabels": {"app": "api"}}},
            ],
            "controlPlaneTo": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
            "extraEgress": [
                {"to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}], "ports": [{"port": 5433}]}
            ],
        },
    ),
    "own-secrets-and-affinity": vault_agent(
        tls={
            "secretRef": {"name": "vault-server-tls"},
            "clientSecretRef": {"name": "vault-probe"},
            "clusterDomain": "corp.internal",
        },
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                }
            }
        },
        networkPolicy={"storeTo": [{"ipBlock": {"cidr": "10.0.5.0/24"}}], "storePort": 6432},
    ),
}


@pytest.mark.parametrize("version", [OLDEST_SUPPORTED, KUBE_VERSION])
@pytest.mark.parametrize("case", sorted(BODIES))
def test_every_operator_made_manifest_validates(case: str, version: str) -> None:
    body = BODIES[case]
    spec = parse_spec(body["metadata"]["name"], body["spec"])
    objects = build_all(body, spec)
    kinds = [o["kind"] for o in objects]
    assert kinds[:3] == ["ConfigMap", "Service", "Service"] and kinds[-1] == "StatefulSet"
    assert {"PodDisruptionBudget", "NetworkPolicy"} <= set(kinds)
    assert ("CronJob" in kinds) is (spec.backup is not None)
    if spec.tls.mode == "operator":
        ca = load_ca(new_ca_secret(body))
        objects += [new_ca_secret(body), server_secret(body, ca), client_secret(body, ca)]
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)
    jsonschema.validate(body, _crd_schema())  # the body itself is a valid VaultAgent


@pytest.mark.parametrize("version", [OLDEST_SUPPORTED, KUBE_VERSION])
@pytest.mark.parametrize("name", ["crd.yaml", "rbac.yaml", "operator.yaml"])
def test_deploy_manifests_validate(name: str, version: str) -> None:
    docs = _docs(name)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_a_broken_manifest_is_caught() -> None:
    body = vault_agent()
    sts = build_all(body, parse_spec("production-vault", body["spec"]))[-1]
    sts["spec"]["replicaz"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBE_VERSION, strict=True)


def test_examples_validate_against_the_crd_and_the_operator() -> None:
    examples = _docs("example-vaultagent.yaml")
    assert [e["metadata"]["name"] for e in examples] == ["production-vault", "edge-vault"]
    schema = _crd_schema()
    for example in examples:
        jsonschema.validate(example, schema)
        spec = parse_spec(example["metadata"]["name"], example["spec"])
        if spec.replicas > 1:
            assert spec.store_type == "postgresql"
    assert examples[0]["spec"]["replicas"] == 3


def test_crd_schema_refuses_bad_instances() -> None:
    schema = _crd_schema()
    good = vault_agent()
    jsonschema.validate(good, schema)
    bad: list[dict[str, Any]] = [
        {"replicas": 0},
        {"replicas": 16},
        {"storage": {"size": "lots"}},
        {"controlPlane": {"endpoint": "http://plain", "certificateRef": "c"}},
        {"controlPlane": {"endpoint": "https://cp"}},
        {"store": {"type": "mysql"}},
        {"imagePullPolicy": "Sometimes"},
        {"unknownField": 1},
        {"tls": {"issuerRef": {"name": "ca", "kind": "Vault"}}},
        {"tls": {"secretRef": {"name": "Bad_Name"}}},
        {"podAntiAffinity": "sometimes"},
        {"backup": {"schedule": "@daily"}},  # no claimName
        {"backup": {"schedule": "@daily", "claimName": "b", "retention": 0}},
        {"networkPolicy": {"storePort": 0}},
        {"nodeSelector": {"disk": 1}},
        {"imagePullSecrets": [{"name": "x"}]},
    ]
    for change in bad:
        instance = vault_agent(**change)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(instance, schema)


def test_crd_encodes_the_shared_store_rule_and_subresources() -> None:
    (crd,) = _docs("crd.yaml")
    version = crd["spec"]["versions"][0]
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [r["rule"] for r in spec_schema["x-kubernetes-validations"]]
    assert "self.replicas <= 1 || (has(self.store) && self.store.type == 'postgresql')" in rules
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert "status" in version["subresources"]
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Replicas", "Ready", "Phase"} <= columns

    def undocumented(node: dict[str, Any], path: str) -> list[str]:
        missing = []
        for key, child in node.get("properties", {}).items():
            if "description" not in child and path.startswith(".spec"):
                missing.append(f"{path}.{key}")
            missing += undocumented(child, f"{path}.{key}")
        return missing

    assert undocumented(spec_schema, ".spec") == []


def _verbs(role: dict[str, Any], group: str, plural: str) -> set[str]:
    return {
        verb
        for rule in role["rules"]
        if group in rule["apiGroups"] and plural in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_grants_no_delete_and_only_what_the_operator_uses() -> None:
    (role,) = [d for d in _docs("rbac.yaml") if d["kind"] == "ClusterRole"]
    for rule in role["rules"]:
        assert "delete" not in rule["verbs"] and "*" not in rule["verbs"], rule
        assert "update" not in rule["verbs"] or rule["resources"] == ["vaultagents/finalizers"]
    # Secrets: its own CA/certificate Secrets only (label-selected watch); no update, no delete
    assert _verbs(role, "", "secrets") == {"get", "list", "watch", "create", "patch"}
    for group, _version, plural in OWNED:  # every watched kind can be listed and watched
        assert {"list", "watch", "get", "create", "patch"} <= _verbs(role, group, plural), plural
    # every kind the API client touches, granted by rbac.yaml or another rbac-*.yaml
    roles = [
        d
        for path in sorted(DEPLOY.glob("rbac*.yaml"))
        for d in _docs(path.name)
        if d["kind"] == "ClusterRole"
    ]
    every = {"rules": [rule for r in roles for rule in r["rules"]]}
    for kind, (prefix, plural) in PATHS.items():
        group = prefix.split("/")[1] if prefix.startswith("apis/") else ""
        assert {"get", "patch"} <= _verbs(every, group, plural), kind
