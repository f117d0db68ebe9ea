"""A tiny Kubernetes API server answering with recorded response shapes, for ``HttpKubeApi``.

The JSON files in ``tests/k8s/recorded/`` have the shape the API server sends (a ``Status``
for a 404, an apply answer with ``managedFields`` and ``resourceVersion``, a
``DeploymentList``). :class:`RecordedApiServer` serves them through ``httpx.MockTransport``
to the real :class:`~k8s_operator.api.HttpKubeApi`, so the operator's URLs, verbs, content
types and parameters are exercised too. It keeps what is applied, bumps a Deployment's
generation on a patch and reports the new template rolled out only after it was looked at
once (as a real controller needs a moment), and records every call.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx

from k8s_operator.secret_sync import SyncHttpKubeApi

RECORDED = Path(__file__).resolve().parent / "recorded"
PLURAL_KIND = {"secrets": "Secret", "deployments": "Deployment", "vaultagents": "VaultAgent"}


def recorded(name: str) -> Any:
    """One recorded response body."""
    return json.loads((RECORDED / name).read_text())


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class RecordedApiServer:
    """Objects by (kind, namespace, name), served with the recorded response shapes."""

    def __init__(self, *, deployments: bool = True) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []  # (verb, kind, name)
        self.unsettled: set[str] = set()  # Deployments patched and not looked at since
        agent = recorded("vaultagent-get-200.json")
        self.put(agent)
        if deployments:
            for item in recorded("deployments-list.json")["items"]:
                self.put({"apiVersion": "apps/v1", "kind": "Deployment", **item})
        self._version = 60000

    def put(self, obj: dict[str, Any]) -> None:
        """Store an object as if created earlier."""
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace", "default"), meta["name"])] = obj

    def stored(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object as stored, or None."""
        return self.objects.get((kind, "default", name))

    def api(self) -> SyncHttpKubeApi:
        """The operator's real HTTP client, talking to this server."""
        client = httpx.AsyncClient(
            base_url="https://kubernetes.default.svc", transport=httpx.MockTransport(self.handle)
        )
        return SyncHttpKubeApi(client)

    def count(self, verb: str, kind: str) -> int:
        """How many calls of one verb on one kind were made."""
        return sum(1 for v, k, _ in self.calls if (v, k) == (verb, kind))

    def handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        namespace = parts[parts.index("namespaces") + 1]
        plural = parts[parts.index("namespaces") + 2]
        kind = PLURAL_KIND[plural]
        name = (
            parts[parts.index("namespaces") + 3]
            if len(parts) > parts.index("namespaces") + 3
            else ""
        )
        if request.method == "GET" and not name:
            self.calls.append(("list", kind, request.url.params.get("labelSelector", "")))
            return self._list(kind, namespace, request.url.params.get("labelSelector", ""))
        if request.method == "GET":
            self.calls.append(("get", kind, name))
            return self._get(kind, namespace, name)
        content_type = request.headers["content-type"]
        body = json.loads(request.content)
        if content_type == "application/apply-patch+yaml":
            assert request.url.params["fieldManager"] == "keyvault-operator"
            self.calls.append(("apply", kind, name))
            return self._apply(kind, namespace, name, body)
        assert content_type == "application/merge-patch+json", content_type
        self.calls.append(("patch", kind, name))
        return self._patch(kind, namespace, name, body)

    def _not_found(self, plural: str, name: str) -> httpx.Response:
        status = recorded("secret-get-404.json")
        status["message"] = f'{plural} "{name}" not found'
        status["details"] = {"name": name, "kind": plural}
        return httpx.Response(404, json=status)

    def _get(self, kind: str, namespace: str, name: str) -> httpx.Response:
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            return self._not_found(f"{kind.lower()}s", name)
        if kind == "Deployment" and name in self.unsettled:
            self.unsettled.discard(name)  # the controller catches up after one look
            answer = copy.deepcopy(obj)
            answer["status"]["observedGeneration"] = obj["metadata"]["generation"] - 1
            answer["status"]["updatedReplicas"] = 0
            return httpx.Response(200, json=answer)
        if kind == "Deployment":
            obj["status"]["observedGeneration"] = obj["metadata"]["generation"]
            obj["status"]["updatedReplicas"] = obj["spec"]["replicas"]
        return httpx.Response(200, json=obj)

    def _list(self, kind: str, namespace: str, selector: str) -> httpx.Response:
        wanted = dict(pair.split("=", 1) for pair in selector.split(",") if pair)
        listing = recorded("deployments-list.json")
        listing["items"] = [
            {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
            for (k, ns, _), obj in sorted(self.objects.items())
            if k == kind
            and ns == namespace
            and wanted.items() <= (obj["metadata"].get("labels") or {}).items()
        ]
        return httpx.Response(200, json=listing)

    def _apply(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> httpx.Response:
        assert kind == "Secret"
        old = self.objects.get((kind, namespace, name))
        answer = recorded("secret-apply-201.json")
        self._version += 1
        meta = answer["metadata"]
        meta.update(copy.deepcopy(body["metadata"]))
        meta["resourceVersion"] = str(self._version)
        if old is not None:
            meta["uid"] = old["metadata"]["uid"]
        answer["type"] = body["type"]
        answer["data"] = copy.deepcopy(body["data"])
        self.objects[(kind, namespace, name)] = answer
        return httpx.Response(201 if old is None else 200, json=answer)

    def _patch(self, kind: str, namespace: str, name: str, body: dict[str, Any]) -> httpx.Response:
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            return self._not_found(f"{kind.lower()}s", name)
        _merge(obj, body)
        obj["metadata"]["generation"] += 1
        self.unsettled.add(name)
        return httpx.Response(200, json=obj)
