"""Shared pieces of the operator tests: a VaultAgent body and a fake Kubernetes API."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s"


def vault_agent(name: str = "production-vault", **spec: Any) -> dict[str, Any]:
    """A stored VaultAgent as kopf hands it to a handler."""
    base: dict[str, Any] = {
        "replicas": 3,
        "storage": {"size": "10Gi", "storageClass": "fast-ssd"},
        "controlPlane": {
            "endpoint": "https://api.keyvault.com",
            "certificateRef": "vault-client-cert",
        },
        "masterKeyRef": {"name": "vault-master"},
        "store": {"type": "postgresql", "urlSecretRef": {"name": "vault-db"}},
    }
    base.update(spec)
    return {
        "apiVersion": "keyvault.io/v1",
        "kind": "VaultAgent",
        "metadata": {"name": name, "namespace": "vaults", "uid": "uid-1234", "generation": 1},
        "spec": base,
    }


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeKubeApi:
    """Records every call and keeps the objects in a dict, like a tiny API server."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.patches: list[tuple[str, str, dict[str, Any]]] = []

    def stored(self, kind: str, name: str, namespace: str = "vaults") -> dict[str, Any]:
        """The object as stored."""
        return self.objects[(kind, namespace, name)]

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        key = (obj["kind"], meta["namespace"], meta["name"])
        self.calls.append(("apply", obj["kind"], meta["name"]))
        old = self.objects.get(key)
        new = copy.deepcopy(dict(obj))
        new["metadata"]["generation"] = (old or {}).get("metadata", {}).get("generation", 0) + 1
        if old is not None and "status" in old:
            new["status"] = old["status"]
        self.objects[key] = new
        return copy.deepcopy(new)

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        meta = obj["metadata"]
        self.calls.append(("create", obj["kind"], meta["name"]))
        key = (obj["kind"], meta["namespace"], meta["name"])
        if key in self.objects:
            return None  # 409: left as it is
        self.objects[key] = copy.deepcopy(dict(obj))
        return copy.deepcopy(self.objects[key])

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        self.calls.append(("patch_status", "VaultAgent", name))
        obj = self.objects.get(("VaultAgent", namespace, name))
        if obj is None:
            return None
        _merge(obj.setdefault("status", {}), status)
        return copy.deepcopy(obj)

    def delete(self, kind: str, name: str, namespace: str = "vaults") -> dict[str, Any]:
        """Remove an object as ``kubectl delete`` would; returns it (the event's body)."""
        return self.objects.pop((kind, namespace, name))

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", kind, name))
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        self.calls.append(("patch", kind, name))
        self.patches.append((kind, name, dict(patch)))
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            return None
        _merge(obj, patch)
        return copy.deepcopy(obj)


@pytest.fixture
def fake_api() -> FakeKubeApi:
    """A fresh fake API server."""
    return FakeKubeApi()
