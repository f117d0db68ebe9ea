"""The pods the Kubernetes operator renders, run for real under Docker (no cluster here).

A VaultAgent with two replicas and a PostgreSQL store is rendered by the operator's own builders
(``build_all``, the CA and certificate Secrets of ``ensure_operator_tls``). Its StatefulSet pod
template becomes ``docker run`` invocations the way a kubelet would run it: the built agent image,
the containers' command and environment exactly as rendered (fieldRef and secretKeyRef resolved),
every Secret and ConfigMap the pod mounts written to a host folder with its items and
defaultMode, owned by the pod's fsGroup, bind-mounted read-only at the rendered mountPath; the
data claim as a named volume; the memory emptyDir as a tmpfs; readOnlyRootFilesystem as
``--read-only``, capabilities dropped, runAsUser/runAsGroup/fsGroup as the user and group, no
privilege escalation. Pods start in order (OrderedReady): the init container, then the agent with
the rendered probe as its Docker health check. A client holding a certificate from the operator's
CA then writes a secret through pod 0 and reads it from each pod, by each pod's DNS name, over
mutual TLS. Where Docker cannot be started this skips, or fails with ``CI=true``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shlex
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from k8s_operator.crd import parse_spec
from k8s_operator.resources import build_all
from k8s_operator.tls import ensure_operator_tls, load_ca
from tests.deploy.test_docker_stack import SERVICES_IMAGE, VERSION, run, wait_for
from tests.k8s.conftest import FakeKubeApi, vault_agent

pytestmark = pytest.mark.timeout(900)

NAME = "production-vault"
NAMESPACE = "vaults"
IMAGE = f"keyvault/agent:{VERSION}"
DB_PASSWORD = "pods-db-" + uuid.uuid4().hex[:12]


class Pods:
    """Docker objects one test made (containers, volumes, a network), removed afterwards."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.tag = uuid.uuid4().hex[:8]
        self.network = f"kvpods-{self.tag}"
        self.containers: list[str] = []
        self.volumes: list[str] = []

    def docker(self, *args: str, timeout: float = 120, **kw: Any) -> str:
        return run("docker", *args, env=self.env, timeout=timeout, **kw).stdout

    def state(self, container: str) -> dict[str, Any]:
        out = json.loads(self.docker("inspect", container))[0]["State"]
        return dict(out)

    def logs(self) -> str:
        parts = []
        for c in self.containers:
            done = run("docker", "logs", "--tail", "40", c, env=self.env, check=False)
            parts.append(f"--- {c}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return "\n".join(parts)

    def remove(self) -> None:
        for c in self.containers:
            run("docker", "rm", "-f", "-v", c, env=self.env, check=False)
        for v in self.volumes:
            run("docker", "volume", "rm", "-f", v, env=self.env, check=False)
        run("docker", "network", "rm", self.network, env=self.env, check=False)


@pytest.fixture
def pods(docker_env: dict[str, str]) -> Iterator[Pods]:
    made = Pods(docker_env)
    made.docker("network", "create", made.network)
    try:
        yield made
    finally:
        made.remove()


def write_volume(folder: Path, data: dict[str, bytes], source: dict[str, Any], group: int) -> None:
    """A Secret/ConfigMap volume as the kubelet writes it: the listed items (or every key), each
    file with the volume's defaultMode, owned by root and the pod's fsGroup."""
    folder.mkdir(parents=True)
    os.chmod(folder, 0o755)
    items = source.get("items") or [{"key": k, "path": k} for k in data]
    for item in items:
        path = folder / item["path"]
        path.write_bytes(data[item["key"]])
        os.chown(path, 0, group)
        os.chmod(path, source.get("defaultMode", 0o644))


def test_operator_rendered_pods_serve_a_secret_over_mutual_tls(pods: Pods, tmp_path: Path) -> None:
    started = time.monotonic()
    body = vault_agent(
        replicas=2, store={"type": "postgresql", "urlSecretRef": {"name": "vault-db"}}
    )
    spec = parse_spec(NAME, body["spec"])
    api = FakeKubeApi()
    asyncio.run(ensure_operator_tls(api, body))
    objects = build_all(body, spec)
    configmaps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    sts = objects[-1]
    assert sts["kind"] == "StatefulSet" and sts["spec"]["replicas"] == 2
    pod = sts["spec"]["template"]["spec"]
    security = pod["securityContext"]
    group = security["fsGroup"]

    # the Secrets the VaultAgent names, as a user (master key, store URL, identity) or the
    # operator (TLS) made them; the store is PostgreSQL in a container on the pods' network
    db_host = f"db-{pods.tag}"
    secrets: dict[str, dict[str, bytes]] = {
        k[2]: {key: base64.b64decode(v) for key, v in o["data"].items()}
        for k, o in api.objects.items()
        if k[0] == "Secret"
    }
    secrets[spec.master_key.name] = {spec.master_key.key: os.urandom(32)}
    assert spec.store_url is not None
    secrets[spec.store_url.name] = {
        spec.store_url.key: f"postgresql://keyvault:{DB_PASSWORD}@{db_host}:5432/keyvault".encode()
    }
    secrets[spec.certificate_secret] = {}  # no control plane here: the agent stays unenrolled

    pw_file = tmp_path / "pg_password"
    pw_file.write_text(DB_PASSWORD + "\n")
    os.chmod(pw_file, 0o444)
    pods.containers.append(db_host)
    pods.docker("run", "-d", "--name", db_host, "--network", pods.network, "--user", "postgres",
                "--entrypoint", "pg-start", "-e", "POSTGRES_USER=keyvault",
                "-e", "POSTGRES_DB=keyvault", "-e", "POSTGRES_PASSWORD_FILE=/run/pg_password",
                "-v", f"{pw_file}:/run/pg_password:ro", SERVICES_IMAGE)  # fmt: skip
    wait_for("PostgreSQL answered",
             lambda: run("docker", "exec", db_host, "pg_isready", "-U", "keyvault",
                         env=pods.env, check=False).returncode == 0,
             60, pods.logs)  # fmt: skip

    def pod_args(ordinal: int, container: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        """``docker run`` options for one rendered container of pod ``ordinal``, and the
        environment holding the values of its secretKeyRef variables (off the command line)."""
        pod_name = f"{NAME}-{ordinal}"
        sec = {**security, **container["securityContext"]}
        assert sec["capabilities"]["drop"] == ["ALL"] and sec["readOnlyRootFilesystem"]
        assert sec["allowPrivilegeEscalation"] is False and sec["runAsNonRoot"]
        args = [
            "--network", pods.network, "--hostname", pod_name,
            "--network-alias", f"{pod_name}.{NAME}-headless.{NAMESPACE}.svc",
            "--user", f"{sec['runAsUser']}:{sec['runAsGroup']}", "--group-add", str(group),
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        ]  # fmt: skip
        env = dict(pods.env)
        for var in container["env"]:
            if "value" in var:
                args += ["-e", f"{var['name']}={var['value']}"]
                continue
            ref = var["valueFrom"]
            if "fieldRef" in ref:
                assert ref["fieldRef"]["fieldPath"] == "metadata.name"
                args += ["-e", f"{var['name']}={pod_name}"]
            else:
                key = ref["secretKeyRef"]
                env[var["name"]] = secrets[key["name"]][key["key"]].decode()
                args += ["-e", var["name"]]  # docker reads the value from its own environment
        volumes = {v["name"]: v for v in pod["volumes"]}
        for mount in container["volumeMounts"]:
            volume = volumes.get(mount["name"])
            if volume is None:  # the volume claim template
                assert mount["name"] == "data"
                args += ["-v", f"{data_volume(ordinal)}:{mount['mountPath']}"]
            elif "emptyDir" in volume:
                assert volume["emptyDir"]["medium"] == "Memory"
                args += ["--tmpfs", f"{mount['mountPath']}:rw,size=64m,mode=1777"]
            else:
                assert mount.get("readOnly"), mount
                host = tmp_path / f"pod-{ordinal}" / mount["name"]
                if not host.exists():
                    if "secret" in volume:
                        source = volume["secret"]
                        data = secrets[source["secretName"]]
                    else:
                        source = volume["configMap"]
                        data = {k: v.encode() for k, v in configmaps[source["name"]].items()}
                    write_volume(host, data, source, group)
                args += ["-v", f"{host}:{mount['mountPath']}:ro"]
        command = container["command"]
        return ["--entrypoint", command[0], *args, IMAGE, *command[1:]], env

    def data_volume(ordinal: int) -> str:
        return f"data-{NAME}-{ordinal}-{pods.tag}"

    init, agent = pod["initContainers"][0], pod["containers"][0]
    probe = agent["startupProbe"]
    port = agent["ports"][0]["containerPort"]
    for ordinal in range(spec.replicas):  # OrderedReady: pod 1 starts once pod 0 is ready
        volume = data_volume(ordinal)
        pods.volumes.append(volume)
        pods.docker("volume", "create", volume)
        # what fsGroup does to a fresh claim: group-owned by the pod's group, setgid
        pods.docker("run", "--rm", "--user", "0", "--entrypoint", "/bin/sh", "-v",
                    f"{volume}:/v", IMAGE, "-c", f"chown 0:{group} /v && chmod 2775 /v")  # fmt: skip
        args, env = pod_args(ordinal, init)
        done = run("docker", "run", "--rm", "--name", f"{NAME}-{ordinal}-prepare-{pods.tag}",
                   *args, env=env, check=False, timeout=180)  # fmt: skip
        assert done.returncode == 0, f"init container of pod {ordinal}:\n{done.stderr[-4000:]}"
        args, env = pod_args(ordinal, agent)
        name = f"{NAME}-{ordinal}-{pods.tag}"
        pods.containers.append(name)
        run("docker", "run", "-d", "--name", name, "-p", f"127.0.0.1::{port}",
            "--health-cmd", shlex.join(probe["exec"]["command"]),
            "--health-timeout", f"{probe['timeoutSeconds']}s", "--health-interval", "1s",
            "--health-retries", str(probe["failureThreshold"]), *args, env=env)  # fmt: skip
        wait_for(f"pod {ordinal} became healthy by its rendered probe",
                 lambda n=name: pods.state(n).get("Health", {}).get("Status") == "healthy",
                 90, pods.logs)  # fmt: skip

    # a workload with a client certificate from the VaultAgent's CA (the operator's Secret)
    ca = load_ca(api.stored("Secret", f"{NAME}-ca"))
    cert, key = ca.issue_client_cert("workload")
    creds = tmp_path / "workload"
    creds.mkdir()
    (creds / "ca.crt").write_bytes(ca.cert_pem())
    (creds / "tls.crt").write_bytes(cert)
    (creds / "tls.key").write_bytes(key)
    ctx = ssl.create_default_context(cafile=str(creds / "ca.crt"))
    ctx.load_cert_chain(creds / "tls.crt", creds / "tls.key")
    admin = pods.docker(
        "exec", f"{NAME}-0-{pods.tag}", "cat", f"{dict_env(agent)['KEYVAULT_DATA_DIR']}/admin.token"
    ).strip()
    headers = {"Authorization": f"Bearer {admin}"}
    value = "from-pod-0-" + uuid.uuid4().hex[:8]
    for ordinal in range(spec.replicas):
        name = f"{NAME}-{ordinal}-{pods.tag}"
        host_port = pods.docker("port", name, str(port)).strip().splitlines()[0].rsplit(":", 1)[1]
        dns = f"{NAME}-{ordinal}.{NAME}-headless.{NAMESPACE}.svc.cluster.local"
        with httpx.Client(
            base_url=f"https://127.0.0.1:{host_port}",
            verify=ctx,
            headers=headers,
            timeout=30,
        ) as client:
            # the server certificate is checked against the pod's DNS name, not 127.0.0.1
            sni = {"sni_hostname": dns}
            if ordinal == 0:
                made = client.post(
                    "/api/v1/secrets", json={"name": "pods/db", "value": value}, extensions=sni
                )
                assert made.status_code in (200, 201), made.text
            got = client.get("/api/v1/secrets/pods%2Fdb", extensions=sni)
            assert got.status_code == 200, got.text
            assert got.json()["value"] == value  # pod 1 reads what pod 0 wrote: one shared store
        bare = ssl.create_default_context(cafile=str(creds / "ca.crt"))
        with pytest.raises(httpx.HTTPError):  # no client certificate: refused
            httpx.get(f"https://127.0.0.1:{host_port}/api/v1/secrets/pods/db", verify=bare,
                      headers=headers, timeout=10).raise_for_status()  # fmt: skip
    logs = pods.logs()
    assert value not in logs and DB_PASSWORD not in logs and admin not in logs
    print(f"two operator-rendered pods answered reads {time.monotonic() - started:.1f} s in")


def dict_env(container: dict[str, Any]) -> dict[str, str]:
    """A rendered container's literal environment values."""
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}
