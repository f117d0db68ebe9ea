"""The images and the compose stack, for real, under a Docker engine of our own.

``scripts/docker_images.sh --test`` starts dockerd when none answers (data under the user's cache
folder, so layers survive between runs), makes the Debian base locally and builds the three
targets (``scripts/test.sh`` starts it in the background before ruff and mypy; here we wait for
it). Then: the agent image has no control-plane code and no pip, every image carries its SBOM and
OCI labels; the operator image runs ``python -m k8s_operator``; and docker-compose.yml runs as
shipped (only PostgreSQL's and Redis's images swapped for local Debian stand-ins, and the host
ports made ephemeral): control plane over TLS, PostgreSQL, Redis with a password, an agent
enrolled over mutual TLS and shown online by the operator API, a secret written and read over
mutual TLS. Where Docker cannot be started this skips, or fails with ``CI=true``.
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from common.client import AgentClient

ROOT = Path(__file__).resolve().parents[2]
VERSION = "0.1.0"
TARGETS = ("agent", "control-plane", "operator")
OWNER = "owner@example.com"
SERVICES_IMAGE = "keyvault-test/services:bookworm"

pytestmark = pytest.mark.timeout(900)


def run(
    *cmd: str, env: dict[str, str], check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command, its output captured as text; on failure the error shows both streams."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def wait_for(what: str, probe: Callable[[], bool], timeout: float, diag: Callable[[], str]) -> None:
    """Poll ``probe`` until it holds; fail with ``diag()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s\n{diag()}")
        time.sleep(0.5)


def normal(name: str) -> str:
    """A distribution name normalised as PEP 503 does."""
    return re.sub(r"[-_.]+", "-", name).lower()


def inspect(env: dict[str, str], ref: str) -> dict[str, Any]:
    """``docker image inspect`` of one image."""
    out = json.loads(run("docker", "image", "inspect", ref, env=env).stdout)
    return dict(out[0])


def in_image(env: dict[str, str], image: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run a shell script in a throwaway container of ``image`` (read-only, no capabilities)."""
    return run(
        "docker", "run", "--rm", "--read-only", "--cap-drop", "ALL", "--entrypoint", "/bin/sh",
        image, "-c", script, env=env, check=False,
    )  # fmt: skip


def test_images_hold_only_their_target_an_sbom_and_labels(docker_env: dict[str, str]) -> None:
    own = {
        "agent": {"agent", "serverkit", "common"},
        "control-plane": {"control_plane", "serverkit", "common"},
        "operator": {"k8s_operator", "common"},
    }
    ours = {"agent", "control_plane", "k8s_operator", "serverkit", "common", "apps"}
    for target in TARGETS:
        image = f"keyvault/{target}:{VERSION}"
        meta = inspect(docker_env, image)
        config = meta["Config"]
        assert config["User"] == "10001:10001", target
        labels = config["Labels"]
        assert labels["org.opencontainers.image.version"] == VERSION
        assert labels["org.opencontainers.image.title"] == f"keyvault-{target}"
        for key in ("revision", "created", "source", "licenses", "description"):
            assert labels.get(f"org.opencontainers.image.{key}"), (target, key)
        health = (config.get("Healthcheck") or {}).get("Test") or ["NONE"]
        assert "python" not in " ".join(health), f"{target}: the health check starts Python"
        listing = in_image(
            docker_env,
            image,
            "ls /opt/venv/lib/python3.11/site-packages; echo ==; "
            "command -v pip pip3 || echo no-pip; python -c 'import pip' 2>&1 | tail -1; echo ==; "
            "cat /usr/share/keyvault/sbom.cdx.json",
        )
        assert listing.returncode == 0, listing.stderr
        site, tools, sbom_text = listing.stdout.split("==\n", 2)
        packages = set(site.split())
        assert packages & ours == own[target], (target, packages & ours)
        assert not any(p == "pip" or p.startswith("pip-") for p in packages), target
        assert "no-pip" in tools and "No module named 'pip'" in tools, (target, tools)
        sbom = json.loads(sbom_text)
        assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"].startswith("1.")
        assert sbom["metadata"]["component"]["name"] == "keyvault"
        names = {normal(c["name"]) for c in sbom["components"]}
        dists = {normal(p.split("-")[0]) for p in packages if p.endswith(".dist-info")}
        assert dists - {"keyvault"} <= names, (target, dists - names)  # every installed package
    agent_only = in_image(
        docker_env, f"keyvault/agent:{VERSION}", "python -c 'import control_plane'"
    )
    assert agent_only.returncode != 0 and "No module named 'control_plane'" in agent_only.stderr
    # the Kubernetes operator's pods run `keyvault agent init|enroll|run` in the agent image
    cli = in_image(
        docker_env, f"keyvault/agent:{VERSION}", "keyvault --help; echo ==; keyvault agent --help"
    )
    assert cli.returncode == 0, cli.stderr
    top, agent_help = cli.stdout.split("==\n")
    assert "agent" in top and "control-plane" not in top and "secrets" not in top, top
    assert all(f" {c} " in agent_help for c in ("init", "enroll", "run")), agent_help


def test_operator_image_runs_the_kopf_operator(docker_env: dict[str, str]) -> None:
    """Outside a cluster the entrypoint imports k8s_operator and kopf, then says what is missing."""
    done = run("docker", "run", "--rm", "--read-only", f"keyvault/operator:{VERSION}",
               env=docker_env, check=False, timeout=120)  # fmt: skip
    assert done.returncode != 0
    assert "keyvault-operator: no Kubernetes credentials" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


class Stack:
    """docker-compose.yml in a scratch project folder, driven with docker-compose."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.project = f"kvtest{uuid.uuid4().hex[:8]}"

    def compose(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        cmd = ("docker-compose", "-p", self.project, "--project-directory", str(self.folder))
        return run(*cmd, "-f", str(self.folder / "docker-compose.yml"), *args,
                   env=self.env, check=check, timeout=timeout).stdout  # fmt: skip

    def port(self, service: str, port: int) -> int:
        return int(self.compose("port", service, str(port)).strip().rsplit(":", 1)[1])

    def health(self, service: str) -> str:
        cid = self.compose("ps", "-q", service).strip()
        if not cid:
            return "absent"
        state = json.loads(run("docker", "inspect", cid, env=self.env).stdout)[0]["State"]
        return str(state.get("Health", {}).get("Status", state["Status"]))

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "60", check=False)[-6000:]


def local_compose_file(folder: Path) -> None:
    """docker-compose.yml as shipped, with third-party images swapped and host ports ephemeral."""
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = doc["services"]
    services["postgres"].update(image=SERVICES_IMAGE, user="postgres", entrypoint=["pg-start"])
    services["redis"].update(image=SERVICES_IMAGE, user="redis")
    for svc in services.values():
        svc.pop("build", None)
        svc["ports"] = [f"127.0.0.1::{p.rsplit(':', 1)[1]}" for p in svc.get("ports", [])]
        if svc["image"].startswith("keyvault/"):
            svc["image"] = svc["image"].replace(":latest", f":{VERSION}")
        if "healthcheck" in svc:
            svc["healthcheck"]["interval"] = "1s"
    (folder / "docker-compose.yml").write_text(yaml.safe_dump(doc), encoding="utf-8")


@pytest.fixture
def stack(docker_env: dict[str, str], tmp_path: Path) -> Iterator[Stack]:
    """A scratch project: init.sh's secrets, the local compose file; torn down afterwards."""
    folder = tmp_path / "stack"
    folder.mkdir()
    run("sh", str(ROOT / "deploy" / "docker" / "init.sh"), env=docker_env, cwd=folder)
    local_compose_file(folder)
    stack = Stack(folder, docker_env)
    try:
        yield stack
    finally:
        stack.compose("down", "-v", "--timeout", "5", check=False)
        # the containers wrote as uid 10001 and postgres: remove as root, like init.sh created
        shutil.rmtree(folder, ignore_errors=True)


def test_compose_stack_enrolls_an_agent_and_serves_a_secret(stack: Stack) -> None:
    folder = stack.folder
    stack.compose("up", "-d", "--no-build", "control-plane")  # and what it depends on
    wait_for("the control plane became healthy", lambda: stack.health("control-plane") == "healthy",
             120, stack.logs)  # fmt: skip

    # the operator API speaks TLS with the certificate the first start issued (./cp-tls)
    ctx = ssl.create_default_context(cafile=str(folder / "cp-tls" / "ca.crt"))
    api = f"https://127.0.0.1:{stack.port('control-plane', 8443)}/api/v1"
    with pytest.raises(httpx.HTTPError):
        httpx.get(api.replace("https://", "http://") + "/health", timeout=5)
    password = (folder / "secrets" / "cp_owner_password").read_text().strip()
    stack.compose("exec", "-T", "control-plane", "python", "-m", "control_plane.container",
                  "init", "--org", "Stack", "--email", OWNER)  # fmt: skip
    login = httpx.post(f"{api}/auth/login", json={"email": OWNER, "password": password},
                       verify=ctx, timeout=30)  # fmt: skip
    login.raise_for_status()
    operator = httpx.Client(base_url=api, verify=ctx, timeout=30,
                            headers={"Authorization": f"Bearer {login.json()['token']}"})  # fmt: skip
    with operator:
        token = operator.post("/enrollment-tokens", json={"description": "stack"})
        token.raise_for_status()
        (folder / "config" / "enrollment.token").write_text(token.json()["token"] + "\n")

        # Redis asks for a password: the control plane uses the one from its secret file
        unauth = stack.compose("exec", "-T", "redis", "redis-cli", "get", "x", check=False)
        assert "NOAUTH" in unauth, unauth
        with_password = 'REDISCLI_AUTH="$(sed -n "s/^requirepass //p" /run/secrets/redis_conf)" '
        clients = stack.compose(
            "exec", "-T", "redis", "sh", "-c", with_password + "redis-cli client list"
        ).splitlines()
        others = [c for c in clients if "cmd=client" not in c]
        assert others, clients  # the control plane is connected (not in embedded mode)

        stack.compose("up", "-d", "--no-build", "agent")
        wait_for("the agent became healthy", lambda: stack.health("agent") == "healthy", 120,
                 stack.logs)  # fmt: skip
        state = json.loads((folder / "data" / "uplink" / "state.json").read_text())
        vault_id = state["vault_id"]

        def online() -> bool:
            answer = operator.get(f"/vaults/{vault_id}")
            return answer.status_code == 200 and answer.json()["status"] == "online"

        wait_for("the operator API showed the vault online", online, 60, stack.logs)

    # a secret written and read over the agent's mutual TLS, as an application would
    tls = folder / "data" / "tls"
    admin = (folder / "data" / "admin.token").read_text().strip()
    url = f"https://127.0.0.1:{stack.port('agent', 8080)}"
    certs = {
        "ca_file": tls / "ca.crt",
        "cert_file": tls / "client.crt",
        "key_file": tls / "client.key",
    }
    with AgentClient(url, admin, **certs) as agent:
        agent.create("stack/db-password", "s3cr3t-from-compose")
        assert agent.get("stack/db-password")["value"] == "s3cr3t-from-compose"
    bare = ssl.create_default_context(cafile=str(tls / "ca.crt"))
    with pytest.raises(httpx.HTTPError):  # no client certificate: refused
        httpx.get(f"{url}/api/v1/secrets", verify=bare, timeout=10,
                  headers={"Authorization": f"Bearer {admin}"}).raise_for_status()  # fmt: skip
    logs = stack.logs()
    assert "s3cr3t-from-compose" not in logs and admin not in logs and password not in logs
