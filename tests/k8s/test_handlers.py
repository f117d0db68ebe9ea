"""The kopf handlers, called directly with a fake API server (no cluster needed)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import kopf
import pytest

from k8s_operator import handlers
from k8s_operator.api import HttpKubeApi, KubeApiError
from k8s_operator.crd import parse_spec
from k8s_operator.resources import build_all
from k8s_operator.status import from_statefulset
from tests.k8s.conftest import FakeKubeApi, vault_agent

LOG = logging.getLogger("test.k8s")
ROOT = Path(__file__).resolve().parents[2]


def _conditions(patch: kopf.Patch) -> dict[str, dict]:
    return {c["type"]: c for c in patch["status"]["conditions"]}


async def _create(api: FakeKubeApi, body: dict) -> kopf.Patch:
    patch = kopf.Patch()
    await handlers.reconcile_handler(body=body, patch=patch, memo=kopf.Memo(api=api), logger=LOG)
    return patch


async def test_create_makes_statefulset_services_and_configmap(fake_api: FakeKubeApi) -> None:
    patch = await _create(fake_api, vault_agent())
    applied = [c for c in fake_api.calls if c[0] in ("apply", "create")]
    assert applied == [
        ("create", "Secret", "production-vault-ca"),
        ("apply", "Secret", "production-vault-tls"),
        ("apply", "Secret", "production-vault-client-tls"),
        ("apply", "ConfigMap", "production-vault-scripts"),
        ("apply", "Service", "production-vault"),
        ("apply", "Service", "production-vault-headless"),
        ("apply", "PodDisruptionBudget", "production-vault"),
        ("apply", "NetworkPolicy", "production-vault"),
        ("apply", "StatefulSet", "production-vault"),
    ]
    sts = fake_api.stored("StatefulSet", "production-vault")
    assert sts["spec"]["replicas"] == 3
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert (claim["resources"]["requests"]["storage"], claim["storageClassName"]) == (
        "10Gi",
        "fast-ssd",
    )
    secrets = {
        v["secret"]["secretName"]
        for v in sts["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }
    assert secrets == {
        "vault-client-cert",
        "vault-master",
        "production-vault-tls",
        "production-vault-client-tls",
    }
    for key, obj in fake_api.objects.items():
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1234", key
    conditions = _conditions(patch)
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Progressing"]["status"] == "True"
    assert conditions["InvalidSpec"]["status"] == "False"
    assert patch["status"]["observedGeneration"] == 1
    assert "app.kubernetes.io/instance=production-vault" in patch["status"]["selector"]


async def test_replicas_over_one_with_sqlite_is_refused_and_creates_nothing(
    fake_api: FakeKubeApi,
) -> None:
    body = vault_agent(store={"type": "sqlite"})
    patch = await _create(fake_api, body)
    assert fake_api.calls == []
    conditions = _conditions(patch)
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "InvalidSpec"
    assert conditions["InvalidSpec"]["status"] == "True"
    assert "must share one PostgreSQL store" in conditions["Ready"]["message"]
    assert patch["status"]["phase"] == "Invalid"
    # the status refresh and the field handlers leave a refused spec alone as well
    assert handlers.status_from(body, None) is None
    await handlers.scale(
        old=1, new=3, body=body, patch=kopf.Patch(), memo=kopf.Memo(api=fake_api), logger=LOG
    )
    assert fake_api.calls == []


async def test_update_patches_image_and_replicas_keeping_claims(fake_api: FakeKubeApi) -> None:
    await _create(fake_api, vault_agent())
    body = vault_agent(
        replicas=5, image="keyvault/agent:0.2.0", storage={"size": "20Gi", "storageClass": "other"}
    )
    body["metadata"]["generation"] = 2
    patch = await _create(fake_api, body)
    sts = fake_api.stored("StatefulSet", "production-vault")
    assert sts["spec"]["replicas"] == 5
    images = {c["image"] for c in sts["spec"]["template"]["spec"]["containers"]}
    assert images == {"keyvault/agent:0.2.0"}
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "10Gi"  # immutable: resize() grows claims
    assert patch["status"]["observedGeneration"] == 2


async def test_scale_patches_the_statefulset(fake_api: FakeKubeApi) -> None:
    await _create(fake_api, vault_agent())
    body = vault_agent(replicas=7)
    patch = kopf.Patch()
    await handlers.scale(
        old=3, new=7, body=body, patch=patch, memo=kopf.Memo(api=fake_api), logger=LOG
    )
    assert ("StatefulSet", "production-vault", {"spec": {"replicas": 7}}) in fake_api.patches
    assert fake_api.stored("StatefulSet", "production-vault")["spec"]["replicas"] == 7
    assert patch["status"]["conditions"][0]["type"] == "Ready"
    before = len(fake_api.calls)
    await handlers.scale(
        old=None, new=7, body=body, patch=kopf.Patch(), memo=kopf.Memo(api=fake_api), logger=LOG
    )
    assert len(fake_api.calls) == before  # creation is the create handler's job


async def test_resize_grows_each_replicas_claim(fake_api: FakeKubeApi) -> None:
    body = vault_agent(storage={"size": "20Gi", "storageClass": "fast-ssd"})
    await handlers.resize(
        old="10Gi", new="20Gi", body=body, memo=kopf.Memo(api=fake_api), logger=LOG
    )
    request = {"spec": {"resources": {"requests": {"storage": "20Gi"}}}}
    assert fake_api.patches == [
        ("PersistentVolumeClaim", f"data-production-vault-{i}", request) for i in range(3)
    ]


async def test_api_failure_becomes_a_retry(fake_api: FakeKubeApi) -> None:
    async def refuse(obj: object) -> dict:
        raise KubeApiError("PATCH /apis/apps/v1/... failed with 403: forbidden")

    fake_api.apply = refuse  # type: ignore[method-assign]
    with pytest.raises(kopf.TemporaryError, match="403"):
        await _create(fake_api, vault_agent())


async def _event(api: FakeKubeApi, kind: str, body: dict, what: str = "MODIFIED") -> None:
    await handlers.owned_event(
        event={"type": what, "object": body}, body=body, memo=kopf.Memo(api=api), logger=LOG
    )


async def test_statefulset_events_refresh_the_owner_status(fake_api: FakeKubeApi) -> None:
    body = vault_agent()
    await fake_api.apply(body)
    await _create(fake_api, body)
    sts = fake_api.stored("StatefulSet", "production-vault")
    sts["status"] = {
        "observedGeneration": sts["metadata"]["generation"],
        "replicas": 3,
        "readyReplicas": 3,
        "updatedReplicas": 3,
    }
    await _event(fake_api, "StatefulSet", sts)
    status = fake_api.stored("VaultAgent", "production-vault")["status"]
    assert status["readyReplicas"] == 3
    assert status["phase"] == "Ready"
    assert {c["type"]: c for c in status["conditions"]}["Ready"]["status"] == "True"
    before = len(fake_api.calls)
    await _event(fake_api, "StatefulSet", sts)
    assert fake_api.calls[before:] == [("get", "VaultAgent", "production-vault")]  # unchanged


def test_status_from_a_rolling_statefulset_keeps_transition_times() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    sts = {
        "metadata": {"generation": 4},
        "status": {
            "observedGeneration": 4,
            "replicas": 3,
            "readyReplicas": 1,
            "updatedReplicas": 2,
        },
    }
    first = from_statefulset(sts, 3, 2, "sel", clock=lambda: t0)
    assert first["phase"] == "Progressing"
    assert first["conditions"][0]["message"] == "1/3 agents ready, 2 updated"
    later = from_statefulset(
        sts, 3, 2, "sel", first["conditions"], clock=lambda: datetime(2027, 1, 1, tzinfo=UTC)
    )
    assert later["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    stale = dict(sts, metadata={"generation": 5})  # the controller has not seen the new spec yet
    assert (
        from_statefulset({**stale, "status": {**sts["status"], "readyReplicas": 3}}, 3, 2, "s")[
            "phase"
        ]
        == "Progressing"
    )


async def test_delete_needs_no_api_call(
    fake_api: FakeKubeApi, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="test.k8s"):
        await handlers.deleted(body=vault_agent(), logger=LOG)
    assert fake_api.calls == []
    assert "data volumes data-production-vault-* are kept" in caplog.text


def test_handlers_are_registered_with_kopf() -> None:
    registry = kopf.get_default_registry()
    changing = list(registry._changing.get_all_handlers())
    registered = [h.fn for h in [*changing, *registry._spawning.get_all_handlers()]]
    for fn in (handlers.reconcile_handler, handlers.scale, handlers.resize, handlers.deleted):
        assert fn in registered, fn
    assert registered.count(handlers.reconcile_handler) == 3  # create, update, resume
    (deletion,) = [h for h in changing if h.fn is handlers.deleted]
    assert deletion.requires_finalizer is False  # optional=True: no finalizer, GC cascades
    watched = {h.selector.any_name for h in registry._watching.get_all_handlers()}
    assert watched >= {"statefulsets", "services", "configmaps", "secrets", "networkpolicies"}


def _http_api(handler: object) -> HttpKubeApi:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return HttpKubeApi(httpx.AsyncClient(base_url="https://k8s.test", transport=transport))


async def test_http_api_applies_server_side_and_maps_errors() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/missing"):
            return httpx.Response(404, json={"message": "not found"})
        if request.url.path.endswith("/denied"):
            return httpx.Response(403, json={"message": "statefulsets is forbidden"})
        return httpx.Response(200, json={"kind": "StatefulSet", "echo": request.content.decode()})

    api = _http_api(answer)
    body = vault_agent()
    sts = build_all(body, parse_spec("production-vault", body["spec"]))[-1]
    stored = await api.apply(sts)
    request = seen[-1]
    assert request.method == "PATCH"
    assert request.url.path == "/apis/apps/v1/namespaces/vaults/statefulsets/production-vault"
    assert request.headers["content-type"] == "application/apply-patch+yaml"
    assert dict(request.url.params) == {"fieldManager": "keyvault-operator", "force": "true"}
    assert json.loads(stored["echo"]) == sts
    assert await api.get("Service", "vaults", "missing") is None
    patched = await api.patch("PersistentVolumeClaim", "vaults", "data-v-0", {"spec": {}})
    assert patched is not None
    assert seen[-1].headers["content-type"] == "application/merge-patch+json"
    with pytest.raises(KubeApiError, match="403: statefulsets is forbidden"):
        await api.get("StatefulSet", "vaults", "denied")
    with pytest.raises(KubeApiError, match="does not manage objects of kind Pod"):
        await api.get("Pod", "vaults", "x")
    await api.close()


async def test_http_api_unreachable_is_one_line() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(KubeApiError, match="unreachable: ConnectError"):
        await _http_api(fail).get("StatefulSet", "vaults", "v")


def test_operator_without_credentials_says_so_in_one_line(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "k8s_operator"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 78
    assert done.stderr.strip() == (
        "keyvault-operator: no Kubernetes credentials: run in a pod with a service account, "
        "or set KUBECONFIG"
    )


def test_connect_uses_the_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from k8s_operator.__main__ import connect

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u"}}],
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": "https://k8s.test:6443", "insecure-skip-tls-verify": True},
            }
        ],
        "users": [{"name": "u", "user": {"token": "planted-token"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    api = connect()
    assert str(api.client.base_url) == "https://k8s.test:6443"
    assert api.client.headers["authorization"] == "Bearer planted-token"
    assert "planted-token" not in repr(api)


def test_operator_imports_only_common_of_ours() -> None:
    code = (
        "import sys, k8s_operator.__main__\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('agent', 'control_plane', 'apps'))\n"
        "print(','.join(bad))"
    )
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.strip() == ""


async def test_a_deleted_owned_object_is_made_again(fake_api: FakeKubeApi) -> None:
    body = vault_agent()
    await fake_api.apply(body)
    await _create(fake_api, body)
    ca = fake_api.stored("Secret", "production-vault-ca")
    for kind, name in [
        ("StatefulSet", "production-vault"),
        ("Service", "production-vault-headless"),
        ("ConfigMap", "production-vault-scripts"),
        ("PodDisruptionBudget", "production-vault"),
        ("NetworkPolicy", "production-vault"),
        ("Secret", "production-vault-tls"),
    ]:
        gone = fake_api.delete(kind, name)
        await _event(fake_api, kind, gone, "DELETED")
        assert fake_api.stored(kind, name)["metadata"]["ownerReferences"][0]["uid"] == "uid-1234"
    assert fake_api.stored("Secret", "production-vault-ca") == ca  # never replaced
    status = fake_api.stored("VaultAgent", "production-vault")["status"]
    assert status["phase"] == "Progressing"  # written through the status subresource


async def test_events_of_unowned_or_orphaned_objects_change_nothing(fake_api: FakeKubeApi) -> None:
    body = vault_agent()
    await _create(fake_api, body)  # the VaultAgent itself is not stored: it was deleted
    sts = fake_api.delete("StatefulSet", "production-vault")
    await _event(fake_api, "StatefulSet", sts, "DELETED")
    assert ("StatefulSet", "vaults", "production-vault") not in fake_api.objects
    before = len(fake_api.calls)
    stranger = {"kind": "ConfigMap", "metadata": {"name": "x", "namespace": "vaults"}}
    await _event(fake_api, "ConfigMap", stranger, "DELETED")
    assert len(fake_api.calls) == before  # no owner reference: not even a lookup
    replaced = vault_agent()
    replaced["metadata"]["uid"] = "uid-new"  # same name, new object: the old children are GC's
    await fake_api.apply(replaced)
    await _event(fake_api, "StatefulSet", sts, "DELETED")
    assert ("StatefulSet", "vaults", "production-vault") not in fake_api.objects


def test_no_vaultagent_handler_makes_kopf_add_a_finalizer() -> None:
    """kopf adds a finalizer only for a handler that requires one (a non-optional delete
    handler, a timer, a daemon); none exists for VaultAgents, so deletion never waits for the
    operator (docs/deployment.md, 'Deleting a VaultAgent')."""
    registry = kopf.get_default_registry()
    mine = [
        h
        for h in [
            *registry._changing.get_all_handlers(),
            *registry._spawning.get_all_handlers(),
            *registry._watching.get_all_handlers(),
        ]
        if h.selector is not None and h.selector.any_name == "vaultagents"
    ]
    assert mine
    assert [h.fn for h in mine if getattr(h, "requires_finalizer", None)] == []
    assert (
        not [  # VaultSecrets have a timer and a daemon (and so kopf's finalizer): documented
            h
            for h in registry._spawning.get_all_handlers()
            if h.selector is not None and h.selector.any_name == "vaultagents"
        ]
    )


async def test_issuer_mode_applies_certificates_and_says_when_cert_manager_is_missing(
    fake_api: FakeKubeApi,
) -> None:
    body = vault_agent(tls={"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}})
    await _create(fake_api, body)
    assert fake_api.stored("Certificate", "production-vault-tls")["spec"]["issuerRef"]["name"] == (
        "corp-ca"
    )
    assert ("Secret", "vaults", "production-vault-ca") not in fake_api.objects  # no own CA
    real_apply = fake_api.apply

    async def no_cert_manager(obj: dict) -> dict:
        if obj["kind"] == "Certificate":
            raise KubeApiError("apply of Certificate production-vault-tls found no such resource")
        return await real_apply(obj)

    fake_api.apply = no_cert_manager  # type: ignore[method-assign]
    with pytest.raises(kopf.TemporaryError, match="needs cert-manager"):
        await _create(fake_api, body)


async def test_http_api_creates_only_when_absent_and_patches_status() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST" and b'"taken"' in request.content:
            return httpx.Response(409, json={"message": "already exists"})
        return httpx.Response(201, json=json.loads(request.content or b"{}"))

    api = _http_api(answer)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "v-ca", "namespace": "ns"}}
    assert await api.create(secret) == secret
    assert (seen[-1].method, seen[-1].url.path) == ("POST", "/api/v1/namespaces/ns/secrets")
    assert seen[-1].headers["content-type"] == "application/json"
    taken = {**secret, "metadata": {"name": "taken", "namespace": "ns"}}
    assert await api.create(taken) is None  # 409: the existing object is left alone
    await api.patch_status("ns", "v", {"phase": "Ready"})
    assert seen[-1].url.path == "/apis/keyvault.io/v1/namespaces/ns/vaultagents/v/status"
    assert json.loads(seen[-1].content) == {"status": {"phase": "Ready"}}
    await api.close()


async def test_startup_watches_only_the_operators_own_objects() -> None:
    from kopf._cogs.structs.references import Resource

    settings = kopf.OperatorSettings()
    await handlers.startup(settings=settings)
    assert settings.posting.level == logging.WARNING
    for group, version, plural in handlers.OWNED:
        resource = Resource(group, version, plural, namespaced=True, verbs=["list", "watch"])
        selectors = list(settings.watching.label_selectors.collect(resource))
        assert selectors == ["app.kubernetes.io/managed-by=keyvault-operator"], plural
    other = Resource("", "v1", "pods", namespaced=True, verbs=["list", "watch"])
    assert list(settings.watching.label_selectors.collect(other)) == []
