"""The VaultSecret spec checks, the Secret rendering for each type, and the manifests: the CRD,
RBAC and example validated strictly (kubernetes-validate, several Kubernetes versions), the
example against the CRD's own schema, and every rendered Secret as a real Kubernetes Secret."""

from __future__ import annotations

import base64
import copy
import json
import re
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml

from k8s_operator.vaultsecret import (
    InvalidVaultSecretError,
    batches,
    build_secret,
    content_hash,
    parse_spec,
    render_data,
    uses_secret,
)
from tests.k8s.conftest import DEPLOY
from tests.k8s.test_manifests import KUBE_VERSION, OLDEST_SUPPORTED, to_json_schema
from tests.k8s.test_vaultsecret_sync import vault_secret

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
DOCKER = json.dumps({"auths": {"registry.example.com": {"auth": "dXNlcjpwYXNz"}}})


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _schema() -> dict[str, Any]:
    (crd,) = _docs("crd-vaultsecret.yaml")
    return to_json_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _tls_body() -> dict[str, Any]:
    return vault_secret(
        "shop-tls",
        type="kubernetes.io/tls",
        data=[
            {"key": "tls.crt", "secret": "shop/tls/cert"},
            {"key": "tls.key", "secret": "shop/tls/key"},
        ],
    )


def _docker_body() -> dict[str, Any]:
    return vault_secret(
        "registry",
        type="kubernetes.io/dockerconfigjson",
        data=[{"key": ".dockerconfigjson", "secret": "registry/config"}],
    )


def test_defaults() -> None:
    spec = parse_spec("shop-env", vault_secret()["spec"])
    assert (spec.type, spec.target, spec.refresh_interval) == ("Opaque", "shop-env", 60)
    assert spec.agent.vault_agent == "production-vault" and spec.agent.url is None
    assert (spec.agent.ca.name, spec.agent.ca.key) == ("production-vault-ca", "ca.crt")
    assert not spec.rollout.enabled
    assert (spec.rollout.batch_size, spec.rollout.min_interval) == (1, 300)


def _render(body: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    meta = body["metadata"]
    spec = parse_spec(meta["name"], body["spec"])
    data = render_data(spec, values)
    return build_secret(body, spec, data, "salt", content_hash("salt", spec.type, data))


@pytest.mark.parametrize("version", [OLDEST_SUPPORTED, KUBE_VERSION])
def test_each_type_renders_a_valid_secret(version: str) -> None:
    cases = [
        (vault_secret(), {"shop/db/password": "p", "shop/payments/api-key": "k"}, "Opaque"),
        (_docker_body(), {"registry/config": DOCKER}, "kubernetes.io/dockerconfigjson"),
        (_tls_body(), {"shop/tls/cert": CERT, "shop/tls/key": KEY}, "kubernetes.io/tls"),
    ]
    for body, values, kind in cases:
        secret = _render(body, values)
        kubernetes_validate.validate(secret, version, strict=True)
        assert secret["type"] == kind
        decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert sorted(decoded.values()) == sorted(values.values())
    tls = _render(_tls_body(), {"shop/tls/cert": CERT, "shop/tls/key": KEY})
    assert sorted(tls["data"]) == ["tls.crt", "tls.key"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "is not JSON"),
        ('{"registry": {}}', 'without an "auths" object'),
        ("[]", "auths"),
    ],
)
def test_bad_docker_config_is_refused_with_a_clear_message(text: str, problem: str) -> None:
    with pytest.raises(InvalidVaultSecretError) as raised:
        _render(_docker_body(), {"registry/config": text})
    message = raised.value.message
    assert problem in message and "'registry/config'" in message and '{"auths"' in message
    assert text not in message


def test_tls_without_key_is_refused_and_non_pem_too() -> None:
    body = _tls_body()
    body["spec"]["data"] = body["spec"]["data"][:1]
    with pytest.raises(
        InvalidVaultSecretError, match=re.escape("needs the keys tls.crt and tls.key; add tls.key")
    ):
        parse_spec("shop-tls", body["spec"])
    with pytest.raises(
        InvalidVaultSecretError, match=re.escape("'shop/tls/key' given as tls.key is not a PEM")
    ):
        _render(_tls_body(), {"shop/tls/cert": CERT, "shop/tls/key": "hunter2"})


BAD_SPECS: list[tuple[dict[str, Any], str]] = [
    (
        {
            "agent": {
                "url": "https://x.ns.svc:8443",
                "role": "r",
                "caSecretRef": {"name": "c"},
                "clientCertSecretRef": {"name": "t"},
            }
        },
        "exactly one of",
    ),
    ({"vaultAgentRef": None}, "exactly one of"),
    ({"type": "kubernetes.io/basic-auth"}, "spec.type must be one of"),
    ({"data": []}, "at least one"),
    ({"data": [{"key": "a b", "secret": "x"}]}, "spec.data[0].key"),
    ({"data": [{"key": "a", "secret": "../x"}]}, "spec.data[0].secret"),
    ({"data": [{"key": "a", "secret": "x"}, {"key": "a", "secret": "y"}]}, "same key twice"),
    ({"refreshInterval": "5s"}, "from 10s"),
    ({"refreshInterval": 60}, "duration such as"),
    ({"rollout": {"enabled": True}}, "needs spec.rollout.deployments or spec.rollout.selector"),
    ({"rollout": {"deployments": ["a"], "selector": {"matchLabels": {"a": "b"}}}}, "not both"),
    ({"rollout": {"deployments": ["a"], "batchSize": 0}}, "batchSize"),
    ({"rollout": {"deployments": ["a"], "minInterval": "soon"}}, "minInterval"),
    ({"target": {"name": "Not_A_Name"}}, "spec.target.name"),
    ({"surprise": 1}, "unknown field(s) surprise"),
]


@pytest.mark.parametrize(("change", "message"), BAD_SPECS)
def test_bad_specs_are_refused_by_the_operator_and_the_crd(
    change: dict[str, Any], message: str
) -> None:
    body = vault_secret(**change)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    with pytest.raises(InvalidVaultSecretError) as raised:
        parse_spec("shop-env", body["spec"])
    assert message in raised.value.message
    cel_only = ("exactly one of", "same key twice", "from 10s", "needs spec.rollout", "not both")
    if not any(m in message for m in cel_only):  # these are CEL rules / list-map keys
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, _schema())


def test_agent_url_must_be_https_without_path() -> None:
    for url in ("http://vault.ns.svc:8443", "https://vault.ns.svc:8443/api", "https://user@host"):
        spec = copy.deepcopy(vault_secret()["spec"])
        del spec["vaultAgentRef"]
        spec["agent"]["url"] = url
        with pytest.raises(InvalidVaultSecretError, match=re.escape("spec.agent.url")):
            parse_spec("shop-env", spec)


def test_batches_and_users() -> None:
    assert batches(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert batches(["a"], 3) == [["a"]]
    pull = {
        "spec": {"template": {"spec": {"imagePullSecrets": [{"name": "reg"}], "containers": []}}}
    }
    assert uses_secret(pull, "reg") and not uses_secret(pull, "other")


def test_content_hash_is_keyed_and_changes_with_content() -> None:
    one = content_hash("salt-a", "Opaque", {"k": "v"})
    assert one == content_hash("salt-a", "Opaque", {"k": "v"})
    assert one != content_hash("salt-b", "Opaque", {"k": "v"})
    assert one != content_hash("salt-a", "Opaque", {"k": "w"})
    assert one != content_hash("salt-a", "kubernetes.io/tls", {"k": "v"})


@pytest.mark.parametrize("version", [OLDEST_SUPPORTED, KUBE_VERSION])
@pytest.mark.parametrize("name", ["crd-vaultsecret.yaml", "rbac-vaultsecret.yaml"])
def test_vaultsecret_manifests_validate(name: str, version: str) -> None:
    docs = _docs(name)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_examples_validate_against_the_crd_and_the_operator() -> None:
    examples = _docs("example-vaultsecret.yaml")
    assert [e["metadata"]["name"] for e in examples] == ["shop-env", "registry-login", "shop-tls"]
    schema = _schema()
    types = set()
    for example in examples:
        jsonschema.validate(example, schema)
        spec = parse_spec(example["metadata"]["name"], example["spec"])
        types.add(spec.type)
    assert types == {"Opaque", "kubernetes.io/dockerconfigjson", "kubernetes.io/tls"}


def test_crd_schema_refuses_bad_instances() -> None:
    schema = _schema()
    jsonschema.validate(vault_secret(), schema)
    bad: list[dict[str, Any]] = [
        {"type": "Basic"},
        {"data": []},
        {"data": [{"key": "k"}]},
        {"data": [{"key": "k", "secret": "x", "extra": 1}]},
        {"refreshInterval": "1 minute"},
        {"agent": {"role": "r", "caSecretRef": {"name": "c"}}},
        {
            "agent": {
                "url": "http://plain:80",
                "role": "r",
                "caSecretRef": {"name": "c"},
                "clientCertSecretRef": {"name": "t"},
            }
        },
        {"rollout": {"enabled": True, "batchSize": 0, "deployments": ["a"]}},
        {"rollout": {"deployments": []}},
        {"unknownField": 1},
    ]
    for change in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(vault_secret(**change), schema)


def test_crd_encodes_the_cross_field_rules_and_documents_every_field() -> None:
    (crd,) = _docs("crd-vaultsecret.yaml")
    version = crd["spec"]["versions"][0]
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = " ".join(r["rule"] for r in spec_schema["x-kubernetes-validations"])
    assert "has(self.vaultAgentRef) != has(self.agent.url)" in rules
    assert "tls.key" in rules and ".dockerconfigjson" in rules
    assert spec_schema["properties"]["data"]["x-kubernetes-list-map-keys"] == ["key"]
    assert (
        "duration('10s')"
        in spec_schema["properties"]["refreshInterval"]["x-kubernetes-validations"][0]["rule"]
    )
    assert "status" in version["subresources"]

    def undocumented(node: dict[str, Any], path: str) -> list[str]:
        missing = []
        for key, child in node.get("properties", {}).items():
            if "description" not in child:
                missing.append(f"{path}.{key}")
            missing += undocumented(child, f"{path}.{key}")
        if "items" in node:
            missing += undocumented(node["items"], f"{path}[]")
        return missing

    assert undocumented(spec_schema, ".spec") == []


def test_rbac_adds_no_delete_and_no_secret_listing() -> None:
    (role,) = [d for d in _docs("rbac-vaultsecret.yaml") if d["kind"] == "ClusterRole"]
    for rule in role["rules"]:
        assert "delete" not in rule["verbs"] and "*" not in rule["verbs"], rule
        if "secrets" in rule["resources"]:
            assert sorted(rule["verbs"]) == ["create", "get", "patch"]


def cel_failures(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """The messages of every x-kubernetes-validations rule ``value`` breaks, evaluated with a
    CEL interpreter where the schema puts them (no transition rules here)."""
    failures = []
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations") or []:
        program = env.program(env.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            failures.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for key, child in (schema.get("properties") or {}).items():
            if key in value:
                failures += cel_failures(child, value[key], f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            failures += cel_failures(schema["items"], item, f"{path}[{index}]")
    return failures


def _raw_schema() -> dict[str, Any]:
    (crd,) = _docs("crd-vaultsecret.yaml")
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


CEL_REFUSED: list[tuple[dict[str, Any], str]] = [
    (
        {
            "agent": {
                "url": "https://v.ns.svc:8443",
                "role": "r",
                "caSecretRef": {"name": "c"},
                "clientCertSecretRef": {"name": "t"},
            }
        },
        "exactly one of vaultAgentRef.name",
    ),
    ({"vaultAgentRef": None}, "exactly one of vaultAgentRef.name"),
    ({"refreshInterval": "5s"}, "refreshInterval must be from 10s to 24h"),
    ({"refreshInterval": "25h"}, "refreshInterval must be from 10s to 24h"),
    ({"rollout": {"enabled": True}}, "enabled needs deployments or selector"),
    ({"rollout": {"deployments": ["a"], "selector": {"matchLabels": {"a": "b"}}}}, "not both"),
    (
        {"type": "kubernetes.io/tls", "data": [{"key": "tls.crt", "secret": "c"}]},
        "needs the keys tls.crt and tls.key",
    ),
    (
        {
            "type": "kubernetes.io/dockerconfigjson",
            "data": [{"key": ".dockerconfigjson", "secret": "a"}, {"key": "x", "secret": "b"}],
        },
        "exactly one key, .dockerconfigjson",
    ),
]


@pytest.mark.parametrize(("change", "message"), CEL_REFUSED)
def test_crd_cel_rules_refuse_what_the_operator_refuses(
    change: dict[str, Any], message: str
) -> None:
    body = vault_secret(**change)
    body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
    failures = cel_failures(_raw_schema(), body)
    assert any(message in f for f in failures), failures
    with pytest.raises(InvalidVaultSecretError):
        parse_spec("shop-env", body["spec"])


def test_examples_and_test_bodies_pass_every_cel_rule() -> None:
    bodies = [*_docs("example-vaultsecret.yaml"), vault_secret(), _tls_body(), _docker_body()]
    for body in bodies:
        assert cel_failures(_raw_schema(), body) == [], body["metadata"]["name"]
