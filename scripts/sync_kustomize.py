"""Copy deploy/k8s's manifests into the kustomize tree (kustomize loads no file outside a
kustomization's folder, so the base holds copies; tests/k8s/test_kustomize.py fails when a copy
differs from its source). Run after editing deploy/k8s/{crd,rbac,operator}.yaml:

    .venv/bin/python scripts/sync_kustomize.py

The VaultSecret component's files are copied when they exist (crd-vaultsecret.yaml,
rbac-vaultsecret.yaml).
"""

from __future__ import annotations

import shutil
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
KUSTOMIZE = DEPLOY / "kustomize"
COPIES = {
    "base": ("crd.yaml", "rbac.yaml", "operator.yaml"),
    "components/vaultsecret": ("crd-vaultsecret.yaml", "rbac-vaultsecret.yaml"),
}


def main() -> None:
    """Copy every source that exists; say what was copied."""
    for folder, names in COPIES.items():
        for name in names:
            source = DEPLOY / name
            if source.exists():
                shutil.copyfile(source, KUSTOMIZE / folder / name)
                print(f"{source.relative_to(DEPLOY)} -> kustomize/{folder}/{name}")
            else:
                print(f"{source.relative_to(DEPLOY)} does not exist; skipped")


if __name__ == "__main__":
    main()
