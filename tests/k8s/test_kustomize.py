"""The kustomize base and overlays, rendered offline with the real ``kubectl kustomize`` and
validated strictly against the oldest supported and the newest Kubernetes version; the
VaultAgents they hold are checked against the rendered CRD and by the operator, whose objects
for them are validated the same way."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from k8s_operator.crd import parse_spec
from k8s_operator.resources import build_all
from tests.conftest import need_service
from tests.k8s.conftest import DEPLOY
from tests.k8s.test_manifests import KUBE_VERSION, OLDEST_SUPPORTED, to_json_schema

ROOT = DEPLOY.parents[1]
KUSTOMIZE = DEPLOY / "kustomize"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# the versions test_manifests.py validates against: the oldest the CRD supports, the newest
VERSIONS = [OLDEST_SUPPORTED, KUBE_VERSION]
COPIES = {"base": ("crd.yaml", "rbac.yaml", "operator.yaml")}
COMPONENT = ("crd-vaultsecret.yaml", "rbac-vaultsecret.yaml")


def render(folder: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize <folder>`` (offline: everything is local) as a list of objects."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        need_service("kubectl", FileNotFoundError("kubectl is not on PATH"))
    done = subprocess.run(
        [str(kubectl), "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_base_holds_exact_copies_of_the_manifests() -> None:
    for folder, names in COPIES.items():
        for name in names:
            copy = (KUSTOMIZE / folder / name).read_text()
            assert copy == (DEPLOY / name).read_text(), (
                f"kustomize/{folder}/{name} differs from deploy/k8s/{name}: "
                "run .venv/bin/python scripts/sync_kustomize.py"
            )


@pytest.mark.parametrize("overlay", ["production", "dev"])
def test_overlays_render_and_validate_strictly(overlay: str) -> None:
    docs = render(KUSTOMIZE / "overlays" / overlay)
    (crd,) = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    schema = to_json_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    agents = [d for d in docs if d["kind"] == "VaultAgent"]
    assert len(agents) == 1
    made: list[dict[str, Any]] = []
    for agent in agents:
        jsonschema.validate(agent, schema)
        stored = {**agent, "metadata": {**agent["metadata"], "uid": "uid-1", "generation": 1}}
        made += build_all(stored, parse_spec(agent["metadata"]["name"], agent["spec"]))
    builtin = [d for d in docs if d["kind"] != "VaultAgent"]
    for version in VERSIONS:
        for obj in [*builtin, *made]:
            kubernetes_validate.validate(obj, version, strict=True)
    (operator,) = [d for d in docs if d["kind"] == "Deployment"]
    image = operator["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"keyvault/operator:{VERSION}"
    base = {(d["kind"], d["metadata"]["name"]) for d in render(KUSTOMIZE / "base")}
    assert len(base) == 6
    for obj in docs:
        if (obj["kind"], obj["metadata"]["name"]) in base:
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "keyvault"


def test_production_runs_three_replicas_on_postgresql_and_dev_one_on_sqlite() -> None:
    (prod,) = [
        d for d in render(KUSTOMIZE / "overlays" / "production") if d["kind"] == "VaultAgent"
    ]
    spec = parse_spec("vault", prod["spec"])
    assert (spec.replicas, spec.store_type, spec.scheduling.anti_affinity) == (
        3,
        "postgresql",
        "required",
    )
    (dev,) = [d for d in render(KUSTOMIZE / "overlays" / "dev") if d["kind"] == "VaultAgent"]
    spec = parse_spec("vault", dev["spec"])
    assert (spec.replicas, spec.store_type) == (1, "sqlite")
    assert spec.backup is not None and spec.backup.claim_name == "vault-backups"


def test_vaultsecret_component_is_ready_for_its_files(tmp_path: Path) -> None:
    component = KUSTOMIZE / "components" / "vaultsecret"
    kustomization = yaml.safe_load((component / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    assert kustomization["resources"] == list(COMPONENT)
    assert [n for n in COMPONENT if not (DEPLOY / n).exists()] == []
    for name in COMPONENT:
        assert (component / name).read_text() == (DEPLOY / name).read_text(), (
            f"run .venv/bin/python scripts/sync_kustomize.py to copy deploy/k8s/{name}"
        )
    overlay = tmp_path / "with-vaultsecret"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                # kustomize takes only relative paths
                "resources": [os.path.relpath(KUSTOMIZE / "overlays" / "production", overlay)],
                "components": [os.path.relpath(component, overlay)],
            }
        )
    )
    kinds = [d["kind"] for d in render(overlay)]
    assert kinds.count("CustomResourceDefinition") == 2


def test_operator_and_agent_images_name_the_package_version() -> None:
    operator = yaml.safe_load((DEPLOY / "operator.yaml").read_text())
    image = operator["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"keyvault/operator:{VERSION}"
    from k8s_operator.crd import DEFAULT_IMAGE

    assert DEFAULT_IMAGE == f"keyvault/agent:{VERSION}"
