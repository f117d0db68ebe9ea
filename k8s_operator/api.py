"""The few Kubernetes API calls the handlers make, behind a small interface tests replace.

:class:`HttpKubeApi` talks to the API server with httpx using kopf's own login (service
account in a pod, kubeconfig outside). Objects are written with server-side apply, which
creates or updates in one call and owns only the fields the operator sets.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from common.errors import KeyVaultError
from k8s_operator import API_VERSION, MANAGER, PLURAL

# kind → (API prefix, plural) of every kind the operator touches
PATHS = {
    "ConfigMap": ("api/v1", "configmaps"),
    "Service": ("api/v1", "services"),
    "Secret": ("api/v1", "secrets"),
    "PersistentVolumeClaim": ("api/v1", "persistentvolumeclaims"),
    "StatefulSet": ("apis/apps/v1", "statefulsets"),
    "PodDisruptionBudget": ("apis/policy/v1", "poddisruptionbudgets"),
    "NetworkPolicy": ("apis/networking.k8s.io/v1", "networkpolicies"),
    "CronJob": ("apis/batch/v1", "cronjobs"),
    "Certificate": ("apis/cert-manager.io/v1", "certificates"),
    "VaultAgent": (f"apis/{API_VERSION}", PLURAL),
}


class KubeApiError(KeyVaultError):
    """The API server refused or could not be reached; the message says what and why."""

    code = "kubernetes_api_error"
    http_status = 502


class KubeApi(Protocol):
    """What the handlers need from the API server."""

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update ``obj`` (server-side apply); returns the stored object."""
        ...

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create ``obj`` only if it does not exist: the stored object, or None when it did."""
        ...

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object, or None when it does not exist."""
        ...

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Merge ``status`` into a VaultAgent's status subresource; None when it is gone."""
        ...

    async def patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch an object; None when it does not exist."""
        ...


def object_path(kind: str, namespace: str, name: str) -> str:
    """The URL path of one namespaced object."""
    if kind not in PATHS:
        raise KubeApiError(f"the operator does not manage objects of kind {kind}")
    prefix, plural = PATHS[kind]
    return f"/{prefix}/namespaces/{namespace}/{plural}/{name}"


class HttpKubeApi:
    """:class:`KubeApi` over HTTP; ``client`` carries the server URL, CA and credentials."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @classmethod
    def from_connection(cls, info: Any) -> HttpKubeApi:
        """Build from a kopf ``ConnectionInfo`` (token or client certificate, CA)."""
        ctx = ssl.create_default_context(cafile=info.ca_path) if info.ca_path else None
        if ctx is None:
            ctx = ssl.create_default_context()
        if info.ca_data:
            data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
            ctx.load_verify_locations(cadata=data)
        if info.certificate_path and info.private_key_path:
            ctx.load_cert_chain(info.certificate_path, info.private_key_path)
        if info.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        headers = info.as_http_headers()
        return cls(httpx.AsyncClient(base_url=info.server, verify=ctx, headers=headers, timeout=30))

    async def _call(
        self, method: str, path: str, absent: tuple[int, ...] = (404,), **kwargs: Any
    ) -> dict[str, Any] | None:
        try:
            resp = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise KubeApiError(f"the Kubernetes API is unreachable: {type(exc).__name__}") from None
        if resp.status_code in absent:
            return None
        if resp.status_code >= 400:
            try:
                reason = resp.json().get("message", "")
            except ValueError:
                reason = resp.text[:200]
            raise KubeApiError(f"{method} {path} failed with {resp.status_code}: {reason}")
        result: dict[str, Any] = resp.json()
        return result

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as field manager ``keyvault-operator`` (conflicts forced)."""
        meta = obj["metadata"]
        path = object_path(obj["kind"], meta["namespace"], meta["name"])
        params = {"fieldManager": MANAGER, "force": "true"}
        headers = {"Content-Type": "application/apply-patch+yaml"}
        body = json.dumps(obj)  # JSON is YAML
        result = await self._call("PATCH", path, params=params, headers=headers, content=body)
        if result is None:
            raise KubeApiError(f"apply of {obj['kind']} {meta['name']} found no such resource")
        return result

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """POST one object; None when it exists already (409), which is left as it is."""
        meta = obj["metadata"]
        path = object_path(obj["kind"], meta["namespace"], meta["name"]).rsplit("/", 1)[0]
        params = {"fieldManager": MANAGER}
        headers = {"Content-Type": "application/json"}
        body = json.dumps(obj)
        return await self._call("POST", path, (409,), params=params, headers=headers, content=body)

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """JSON merge patch of a VaultAgent's status subresource."""
        headers = {"Content-Type": "application/merge-patch+json"}
        path = object_path("VaultAgent", namespace, name) + "/status"
        body = json.dumps({"status": status})
        return await self._call("PATCH", path, headers=headers, content=body)

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """GET one object."""
        return await self._call("GET", object_path(kind, namespace, name))

    async def patch(
        self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        """JSON merge patch of one object."""
        headers = {"Content-Type": "application/merge-patch+json"}
        path = object_path(kind, namespace, name)
        return await self._call("PATCH", path, headers=headers, content=json.dumps(patch))

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self.client.aclose()
