"""A small Kubernetes API server (aiohttp) for running the real operator process in tests.

It speaks just enough of the API for kopf and the operator's client: discovery, list and watch
(with resource versions, label selectors and bookmarks), get, create (POST), server-side apply
and merge patches (objects and the status subresource), delete with finalizers, and the
garbage collector's cascade through ownerReferences. Not a conformance-grade server: apply is
a deep merge, and nothing is validated.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

Key = tuple[str, str, str]  # group, version, plural
# (group, version) -> [(plural, kind, namespaced)]
RESOURCES: dict[tuple[str, str], list[tuple[str, str, bool]]] = {
    ("", "v1"): [
        ("namespaces", "Namespace", False),
        ("services", "Service", True),
        ("configmaps", "ConfigMap", True),
        ("secrets", "Secret", True),
        ("events", "Event", True),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True),
    ],
    ("apps", "v1"): [("statefulsets", "StatefulSet", True)],
    ("policy", "v1"): [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    ("networking.k8s.io", "v1"): [("networkpolicies", "NetworkPolicy", True)],
    ("batch", "v1"): [("cronjobs", "CronJob", True)],
    ("keyvault.io", "v1"): [("vaultagents", "VaultAgent", True)],
    ("apiextensions.k8s.io", "v1"): [
        ("customresourcedefinitions", "CustomResourceDefinition", False)
    ],
    ("events.k8s.io", "v1"): [("events", "Event", True)],
}
VERBS = ["get", "list", "watch", "create", "patch", "update", "delete"]


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """JSON merge patch (RFC 7396): maps merge, None deletes, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _matches(obj: Mapping[str, Any], selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


@dataclass
class Watch:
    """One open watch stream."""

    key: Key
    namespace: str | None
    selector: str
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)


class FakeApiServer:
    """The objects, their history (for watches resuming at a resource version) and watchers."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[tuple[str, str], dict[str, Any]]] = {}
        self.history: list[tuple[int, Key, dict[str, Any]]] = []
        self.watches: list[Watch] = []
        self.requests: list[tuple[str, str]] = []
        self.rv = 0
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    # ------------------------------------------------------------------ state
    def stored(self, key: Key, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as stored (a copy), or None."""
        obj = self.objects.get(key, {}).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def end_watches(self) -> None:
        """Close every open watch stream (as an API server does at its timeout)."""
        for watch in self.watches:
            watch.queue.put_nowait(None)

    def watching(self, key: Key) -> int:
        """How many watch streams are open on a resource."""
        return sum(1 for w in self.watches if w.key == key)

    def _emit(self, key: Key, kind: str, obj: dict[str, Any]) -> None:
        event = {"type": kind, "object": copy.deepcopy(obj)}
        self.history.append((self.rv, key, event))
        for watch in self.watches:
            ns = obj["metadata"].get("namespace", "")
            if watch.key == key and watch.namespace in (None, ns):
                if _matches(obj, watch.selector):
                    watch.queue.put_nowait(event)

    def _bump(self, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def create(self, key: Key, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Store a new object (None when it exists)."""
        meta = obj.setdefault("metadata", {})
        where = (meta.get("namespace", ""), meta["name"])
        bucket = self.objects.setdefault(key, {})
        if where in bucket:
            return None
        new = copy.deepcopy(obj)
        new["metadata"].update(
            uid=str(uuid.uuid4()),
            generation=1,
            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        self._bump(new)
        bucket[where] = new
        self._emit(key, "ADDED", new)
        return copy.deepcopy(new)

    def patch(
        self, key: Key, namespace: str, name: str, patch: Mapping[str, Any], status: bool = False
    ) -> dict[str, Any] | None:
        """Merge a patch into an object (or into its status only); None when it is absent."""
        obj = self.objects.get(key, {}).get((namespace, name))
        if obj is None:
            return None
        before = copy.deepcopy(obj.get("spec"))
        if status:
            _merge(obj.setdefault("status", {}), dict(patch).get("status") or {})
        else:
            body = {k: v for k, v in patch.items() if k != "status" or key[2] != "vaultagents"}
            body.get("metadata", {}).pop("uid", None)
            _merge(obj, body)
        if obj.get("spec") != before:
            obj["metadata"]["generation"] = int(obj["metadata"].get("generation", 1)) + 1
        self._bump(obj)
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            return self._remove(key, namespace, name)
        self._emit(key, "MODIFIED", obj)
        return copy.deepcopy(obj)

    def delete(self, key: Key, namespace: str, name: str) -> dict[str, Any] | None:
        """Delete now, or mark for deletion while finalizers remain."""
        obj = self.objects.get(key, {}).get((namespace, name))
        if obj is None:
            return None
        if obj["metadata"].get("finalizers"):
            obj["metadata"]["deletionTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self._bump(obj)
            self._emit(key, "MODIFIED", obj)
            return copy.deepcopy(obj)
        return self._remove(key, namespace, name)

    def _remove(self, key: Key, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects[key].pop((namespace, name))
        self._bump(obj)
        self._emit(key, "DELETED", obj)
        uid = obj["metadata"]["uid"]
        for other_key, bucket in self.objects.items():  # the garbage collector
            for (ns, child), child_obj in list(bucket.items()):
                refs = child_obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    self.delete(other_key, ns, child)
        return copy.deepcopy(obj)

    # ------------------------------------------------------------------ HTTP
    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Route one request."""
        path = request.path.rstrip("/")
        self.requests.append((request.method, path))
        if path == "/version":
            return web.json_response({"major": "1", "minor": "30", "gitVersion": "v1.30.0"})
        if path == "/api":
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            return web.json_response({"kind": "APIGroupList", "groups": self._groups()})
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        else:
            group, version, rest = parts[1], parts[2], parts[3:]
        if not rest:
            return web.json_response(self._resource_list(group, version))
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2:]
        key = (group, version, plural)
        return await self._object(request, key, namespace, name, bool(sub))

    def _groups(self) -> list[dict[str, Any]]:
        out = []
        for group, version in RESOURCES:
            if group:
                gv = {"groupVersion": f"{group}/{version}", "version": version}
                out.append({"name": group, "versions": [gv], "preferredVersion": gv})
        return out

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        items = []
        for plural, kind, namespaced in RESOURCES.get((group, version), []):
            base = {"singularName": kind.lower(), "namespaced": namespaced, "kind": kind}
            items.append({"name": plural, **base, "verbs": VERBS})
            if plural == "vaultagents":
                items.append({"name": f"{plural}/status", **base, "verbs": ["get", "patch"]})
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "groupVersion": gv, "resources": items}

    async def _object(
        self, request: web.Request, key: Key, namespace: str | None, name: str | None, sub: bool
    ) -> web.StreamResponse:
        if name is None and request.method == "GET":
            if request.query.get("watch") == "true":
                return await self._watch(request, key, namespace)
            return web.json_response(
                self._list(key, namespace, request.query.get("labelSelector", ""))
            )
        if name is None and request.method == "POST":
            obj = json.loads(await request.read())
            if key[2] == "events":
                return web.json_response(obj, status=201)
            obj.setdefault("metadata", {}).setdefault("namespace", namespace)
            made = self.create(key, obj)
            if made is None:
                return web.json_response({"kind": "Status", "message": "exists"}, status=409)
            return web.json_response(made, status=201)
        ns = namespace or ""
        assert name is not None
        if request.method == "GET":
            found = self.stored(key, ns, name)
        elif request.method == "DELETE":
            found = self.delete(key, ns, name)
        elif request.method == "PATCH":
            body = json.loads(await request.read())
            kind = request.headers.get("Content-Type", "")
            found = self.patch(key, ns, name, body, status=sub)
            if found is None and "apply-patch" in kind:
                body.setdefault("metadata", {}).setdefault("namespace", ns)
                found = self.create(key, body)
        else:
            return web.json_response({"kind": "Status", "message": "no"}, status=405)
        if found is None:
            return web.json_response({"kind": "Status", "message": "not found"}, status=404)
        return web.json_response(found)

    def _list(self, key: Key, namespace: str | None, selector: str) -> dict[str, Any]:
        items = [
            copy.deepcopy(o)
            for (ns, _), o in sorted(self.objects.get(key, {}).items())
            if namespace in (None, ns) and _matches(o, selector)
        ]
        kind = next((k for p, k, _ in RESOURCES.get(key[:2], []) if p == key[2]), "Object")
        return {
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }

    async def _watch(
        self, request: web.Request, key: Key, namespace: str | None
    ) -> web.StreamResponse:
        watch = Watch(key, namespace, request.query.get("labelSelector", ""))
        since = int(request.query.get("resourceVersion") or self.rv)
        for rv, hkey, event in self.history:  # what happened since the list
            obj = event["object"]
            ns = obj["metadata"].get("namespace", "")
            if rv > since and hkey == key and namespace in (None, ns):
                if _matches(obj, watch.selector):
                    watch.queue.put_nowait(event)
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        self.watches.append(watch)
        timeout = float(request.query.get("timeoutSeconds") or 30)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = await watch.queue.get()
                    if event is None:
                        break
                    await response.write(json.dumps(event).encode() + b"\n")
        except (TimeoutError, ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watches.remove(watch)
        return response
