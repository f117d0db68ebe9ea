"""TLS in the cluster: the certificates the operator makes verify, by a real TLS handshake,
for every name a client uses to reach a VaultAgent's Service or one of its pods."""

from __future__ import annotations

import asyncio
import base64
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common.tls import client_context, server_context
from k8s_operator.crd import parse_spec
from k8s_operator.resources import TLS_DIR, build_statefulset
from k8s_operator.tls import (
    certificates,
    ensure_operator_tls,
    load_ca,
    new_ca_secret,
    server_secret,
    service_names,
)
from tests.k8s.conftest import FakeKubeApi, vault_agent

SERVICE_NAMES = [
    "production-vault",
    "production-vault.vaults",
    "production-vault.vaults.svc",
    "production-vault.vaults.svc.cluster.local",
]


def _files(api: FakeKubeApi, folder: Path, secret: str) -> dict[str, Path]:
    """Write a stored TLS Secret's keys into ``folder`` as a pod's volume would hold them."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, value in api.stored("Secret", secret)["data"].items():
        out[key] = folder / key
        out[key].write_bytes(base64.b64decode(value))
    return out


async def _pod(server: dict[str, Path]) -> tuple[asyncio.Server, int]:
    """One 'pod': a TLS 1.3 server on the certificate from the Secret, client certs required."""
    ctx = server_context(
        server["tls.crt"],
        server["tls.key"],
        client_ca_file=server["ca.crt"],
        require_client_cert=True,
    )

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ctx)
    return srv, srv.sockets[0].getsockname()[1]


async def _handshake(port: int, ctx: ssl.SSLContext, name: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
    data = await reader.read(2)
    writer.close()
    return data


async def test_one_ca_verifies_every_pod_for_every_service_name(
    fake_api: FakeKubeApi, tmp_path: Path
) -> None:
    body = vault_agent()  # 3 replicas
    written = await ensure_operator_tls(fake_api, body)
    assert written == ["production-vault-ca", "production-vault-tls", "production-vault-client-tls"]
    probe = _files(fake_api, tmp_path / "probe", "production-vault-client-tls")
    # three pods, each with the Secret mounted as the StatefulSet mounts it
    pods = [
        await _pod(_files(fake_api, tmp_path / f"pod-{i}", "production-vault-tls"))
        for i in range(3)
    ]
    client = client_context(probe["ca.crt"], cert_file=probe["tls.crt"], key_file=probe["tls.key"])
    try:
        for ordinal, (_, port) in enumerate(pods):
            pod_names = [
                f"production-vault-{ordinal}.production-vault-headless.vaults.svc",
                f"production-vault-{ordinal}.production-vault-headless.vaults.svc.cluster.local",
            ]
            for name in [*SERVICE_NAMES, *pod_names, "127.0.0.1"]:
                assert await _handshake(port, client, name) == b"ok", (ordinal, name)
        # a name the certificate does not carry is refused
        with pytest.raises(ssl.SSLCertVerificationError, match="match"):
            await _handshake(pods[0][1], client, "production-vault.other-namespace.svc")
        # another VaultAgent's CA is not trusted
        other = FakeKubeApi()
        await ensure_operator_tls(other, vault_agent("other-vault"))
        foreign = _files(other, tmp_path / "other", "other-vault-client-tls")
        stranger = client_context(foreign["ca.crt"])
        with pytest.raises(ssl.SSLCertVerificationError):
            await _handshake(pods[1][1], stranger, "production-vault")
        # a client without a certificate from the VaultAgent's CA is refused by the pod
        anonymous = client_context(probe["ca.crt"])
        try:  # TLS 1.3: the refusal arrives after the handshake, as an alert or a closed stream
            answer = await _handshake(pods[2][1], anonymous, "production-vault")
        except (ssl.SSLError, ConnectionError):
            answer = b"refused"
        assert answer in (b"", b"refused")
    finally:
        for srv, _ in pods:
            srv.close()
            await srv.wait_closed()


async def test_the_ca_is_made_once_and_never_replaced(fake_api: FakeKubeApi) -> None:
    body = vault_agent()
    await ensure_operator_tls(fake_api, body)
    ca = dict(fake_api.stored("Secret", "production-vault-ca"))
    server = dict(fake_api.stored("Secret", "production-vault-tls"))
    assert await ensure_operator_tls(fake_api, body) == []  # present and valid: nothing written
    assert fake_api.stored("Secret", "production-vault-ca") == ca
    assert fake_api.stored("Secret", "production-vault-tls") == server
    # a certificate near its expiry is re-issued from the same CA
    soon = datetime.now(UTC) + timedelta(days=340)
    assert await ensure_operator_tls(fake_api, body, now=soon) == [
        "production-vault-tls",
        "production-vault-client-tls",
    ]
    assert fake_api.stored("Secret", "production-vault-ca") == ca
    assert fake_api.stored("Secret", "production-vault-tls") != server
    # a deleted certificate Secret is re-issued, still from the same CA
    fake_api.delete("Secret", "production-vault-tls")
    assert await ensure_operator_tls(fake_api, body) == ["production-vault-tls"]
    assert fake_api.stored("Secret", "production-vault-ca") == ca
    # a CA another writer created first (409 on POST) is the one used
    racing = FakeKubeApi()
    theirs = new_ca_secret(body)
    real_get = racing.get

    async def get_after_race(kind: str, namespace: str, name: str) -> dict | None:
        if name == "production-vault-ca" and ("create", "Secret", name) not in racing.calls:
            await racing.create(theirs)
            racing.calls.pop()
            return None
        return await real_get(kind, namespace, name)

    racing.get = get_after_race  # type: ignore[method-assign]
    await ensure_operator_tls(racing, body)
    assert racing.stored("Secret", "production-vault-ca")["data"] == theirs["data"]
    issued = load_ca(theirs).cert_pem()
    assert (
        base64.b64decode(racing.stored("Secret", "production-vault-tls")["data"]["ca.crt"])
        == issued
    )


def test_ca_secret_is_owned_and_certificate_names_cover_all_replicas() -> None:
    body = vault_agent()
    secret = new_ca_secret(body)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1234"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "keyvault-operator"
    names = service_names("production-vault", "vaults")
    assert names[:4] == SERVICE_NAMES
    assert "production-vault-14.production-vault-headless.vaults.svc" in names  # replica maximum
    assert server_secret(body, load_ca(secret))["type"] == "kubernetes.io/tls"


def test_pods_mount_the_shared_certificate_and_serve_it() -> None:
    body = vault_agent()
    pod = build_statefulset(body, parse_spec("production-vault", body["spec"]))["spec"]["template"][
        "spec"
    ]
    volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert volumes["tls"] == "production-vault-tls"
    assert volumes["tls-client"] == "production-vault-client-tls"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["KEYVAULT_TLS__CERT_FILE"] == f"{TLS_DIR}/tls.crt"
    assert env["KEYVAULT_TLS__CLIENT_CA_FILE"] == f"{TLS_DIR}/ca.crt"


def test_issuer_mode_asks_cert_manager_for_the_same_names() -> None:
    body = vault_agent(tls={"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}})
    server, client = certificates(body, parse_spec("production-vault", body["spec"]))
    assert server["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert server["spec"]["dnsNames"] == service_names("production-vault", "vaults")
    assert server["spec"]["secretName"] == "production-vault-tls"
    assert "server auth" in server["spec"]["usages"] and "client auth" in client["spec"]["usages"]
    assert client["spec"]["secretName"] == "production-vault-client-tls"


async def test_own_secrets_mode_makes_no_tls_objects(fake_api: FakeKubeApi) -> None:
    import logging

    import kopf

    from k8s_operator import handlers

    body = vault_agent(tls={"secretRef": {"name": "mine"}, "clientSecretRef": {"name": "probe"}})
    patch = kopf.Patch()
    await handlers.reconcile_handler(
        body=body, patch=patch, memo=kopf.Memo(api=fake_api), logger=logging.getLogger("t")
    )
    assert not [k for k in fake_api.objects if k[0] in ("Secret", "Certificate")]
    pod = fake_api.stored("StatefulSet", "production-vault")["spec"]["template"]["spec"]
    volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert (volumes["tls"], volumes["tls-client"]) == ("mine", "probe")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_real_agent_pod_serves_the_operator_certificate(
    fake_api: FakeKubeApi, tmp_path: Path
) -> None:
    """One pod, as the StatefulSet describes it, without Kubernetes: the Secrets' files where
    the pod mounts them (under a temporary root), the real init script, the real agent with the
    pod's environment, and the pod's own health probe. A client trusting the VaultAgent's CA
    reaches it under the Service name."""
    import subprocess
    import sys
    import time

    from agent.crypto import generate_key_file
    from k8s_operator.resources import INIT_SCRIPT

    root = tmp_path / "pod"
    body = vault_agent(replicas=1, store={"type": "sqlite"})
    await ensure_operator_tls(fake_api, body)
    _files(fake_api, Path(f"{root}{TLS_DIR}"), "production-vault-tls")
    _files(fake_api, Path(f"{root}/etc/keyvault/tls-client"), "production-vault-client-tls")
    (root / "etc/keyvault/master").mkdir(parents=True)
    generate_key_file(root / "etc/keyvault/master/master.key")
    (root / "tmp").mkdir()
    sts = build_statefulset(body, parse_spec("production-vault", body["spec"]))
    container = sts["spec"]["template"]["spec"]["containers"][0]
    port = _free_port()

    def rooted(value: str) -> str:
        for prefix in ("/var/lib/keyvault", "/etc/keyvault", "/tmp"):
            if value.startswith(prefix):
                return f"{root}{value}"
        return value

    env = {e["name"]: rooted(e["value"]) for e in container["env"] if "value" in e}
    env.update(
        POD_NAME="production-vault-0",
        KEYVAULT_PORT=str(port),
        PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",
        KEYVAULT_CONTROL_PLANE_URL="",
        CONTROL_PLANE_URL="",
    )
    script = INIT_SCRIPT.replace("/etc/keyvault", f"{root}/etc/keyvault")
    done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    agent = subprocess.Popen(
        [sys.executable, "-m", "apps.cli.main", *container["command"][1:]],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url_file = Path(env["KEYVAULT_DATA_DIR"]) / "agent.url"
        deadline = time.monotonic() + 60
        while not url_file.exists() and time.monotonic() < deadline:
            assert agent.poll() is None, agent.stderr.read() if agent.stderr else b""
            await asyncio.sleep(0.1)
        # the pod's own probe: the agent's health check with the probe's client certificate
        probe = subprocess.run(
            [sys.executable, "-m", *container["livenessProbe"]["exec"]["command"][2:]],
            env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.strip() == "healthy"
        # a workload trusting the VaultAgent's CA, through the Service name
        client_dir = Path(f"{root}/etc/keyvault/tls-client")
        ctx = client_context(
            client_dir / "ca.crt", cert_file=client_dir / "tls.crt", key_file=client_dir / "tls.key"
        )
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="production-vault.vaults.svc.cluster.local"
        )
        writer.write(
            b"GET /api/v1/health HTTP/1.1\r\nHost: production-vault\r\nConnection: close\r\n\r\n"
        )
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    finally:
        agent.terminate()
        agent.wait(20)


async def test_a_custom_cluster_domain_is_named_and_a_changed_one_reissues(
    fake_api: FakeKubeApi,
) -> None:
    body = vault_agent()
    await ensure_operator_tls(fake_api, body)
    ca = fake_api.stored("Secret", "production-vault-ca")
    written = await ensure_operator_tls(fake_api, body, domain="corp.internal")
    assert written == ["production-vault-tls"]  # the names changed; the CA and probe did not
    assert fake_api.stored("Secret", "production-vault-ca") == ca
    cert = base64.b64decode(fake_api.stored("Secret", "production-vault-tls")["data"]["tls.crt"])
    from cryptography import x509

    san = x509.load_pem_x509_certificate(cert).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    names = san.value.get_values_for_type(x509.DNSName)
    assert "production-vault.vaults.svc.corp.internal" in names
    assert "production-vault.vaults.svc.cluster.local" not in names
    spec = parse_spec(
        "production-vault", {**body["spec"], "tls": {"clusterDomain": "corp.internal"}}
    )
    assert spec.tls.cluster_domain == "corp.internal" and spec.tls.mode == "operator"
