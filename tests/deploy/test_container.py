"""The Dockerfile and docker-compose.yml, checked without a Docker engine.

Parsed, and held against the code: every COPY source exists and is in the build context, every
``--from`` names a stage, the final stages run as uid 10001, their entrypoints import, every
variable the image or the compose file sets is read by our settings or entrypoints, the ports
are the settings' defaults, and every host path exists once ``deploy/docker/init.sh`` ran.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.crypto import KeySource
from agent.docker_entrypoint import Layout
from agent.settings import AgentSettings
from control_plane.settings import ControlPlaneSettings
from tests.deploy.dockerfile import Dockerfile, parse
from tests.deploy.test_config_reference import load_generator

ROOT = Path(__file__).resolve().parents[2]
FINAL = {
    "agent": "agent.docker_entrypoint",
    "control-plane": "control_plane.container",
    "operator": "k8s_operator",
}
SERVERS = ("agent", "control-plane")  # the targets with ports and a heartbeat health check
HEARTBEAT_CHECK = [
    "/bin/sh",
    "-c",
    'test -n "$(find "$KEYVAULT_HEARTBEAT_FILE" -newermt \'-20 seconds\' 2>/dev/null)"',
]
STANDARD_ENV = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR"}
STANDARD_ENV |= {"PIP_DISABLE_PIP_VERSION_CHECK"}


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    """The parsed Dockerfile."""
    return parse(ROOT / "Dockerfile")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The parsed compose file."""
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def consumed_env() -> set[str]:
    """Every variable our settings and entrypoints read."""
    return set(load_generator().all_env_names())


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:  # the last matching pattern wins; "!" re-includes
        negate = pattern.startswith("!")
        pat = pattern.removeprefix("!").removeprefix("**/")
        if any(fnmatch.fnmatch(p, pat) for p in prefixes):
            excluded = not negate
    return excluded


def test_stages_bases_and_copy_sources(dockerfile: Dockerfile) -> None:
    names = [s.name for s in dockerfile.stages]
    assert set(FINAL) <= set(names) and len(names) == len(set(names))
    for index, stage in enumerate(dockerfile.stages):
        base = dockerfile.resolve(stage.base)
        local_bases = ("python:3.11-slim", "keyvault/python-runtime:3.11")  # scripts/docker_base.sh
        assert base in names[:index] or base.startswith(local_bases), base
        for copy in stage.ops("COPY"):
            *sources, _dest = copy.words()
            if "from" in copy.flags:
                assert copy.flags["from"] in names[:index], copy
                continue
            for src in sources:
                assert (ROOT / src).exists(), f"COPY source {src} does not exist"
                assert not ignored(src), f"COPY source {src} is excluded by .dockerignore"


def test_final_stages_are_small_non_root_and_start_our_entrypoints(dockerfile: Dockerfile) -> None:
    runtime_run = " ".join(i.args for i in dockerfile.stage("runtime").ops("RUN"))
    assert "--uid 10001" in runtime_run and "build-essential" not in runtime_run
    assert dockerfile.resolve(dockerfile.stage("runtime").base).startswith(
        "keyvault/python-runtime"
    )
    for target, module in FINAL.items():
        user = dockerfile.effective(target, "USER")
        assert user is not None and user.args.split(":")[0] not in ("root", "0")
        assert user.args.split(":")[0] == "10001"
        copies = [c for s in dockerfile.chain(target) for c in s.ops("COPY")]
        # only the target's venv and its SBOM, from that target's builder stage
        assert {c.flags.get("from") for c in copies} == {f"build-{target}"}
        assert sorted(c.words() for c in copies) == [
            ["/opt/sbom.cdx.json", "/usr/share/keyvault/sbom.cdx.json"],
            ["/opt/venv", "/opt/venv"],
        ]
        entry = dockerfile.effective(target, "ENTRYPOINT")
        assert entry is not None and entry.words() == ["python", "-m", module]
        check = dockerfile.effective(target, "HEALTHCHECK")
        assert check is not None
        if target in SERVERS:  # a shell and find on the heartbeat file: no interpreter
            assert check.args.startswith("CMD [")
            assert json.loads(check.args.split("CMD", 1)[1]) == HEARTBEAT_CHECK
            assert dockerfile.env(target)["KEYVAULT_HEARTBEAT_FILE"].startswith("/tmp/")
        else:  # the kubelet probes kopf's /healthz
            assert check.args == "NONE"
        labels = {k for s in dockerfile.chain(target) for i in s.ops("LABEL") for k in i.pairs()}
        for key in ("title", "description", "version", "revision", "created", "source"):
            assert f"org.opencontainers.image.{key}" in labels, (target, key)
        module_main = importlib.import_module(
            f"{module}.__main__" if target == "operator" else module
        )
        assert callable(module_main.main)


def test_exposed_ports_are_the_settings_defaults(dockerfile: Dockerfile) -> None:
    agent_ports = {int(p) for i in dockerfile.stage("agent").ops("EXPOSE") for p in i.words()}
    cp_ports = {int(p) for i in dockerfile.stage("control-plane").ops("EXPOSE") for p in i.words()}
    cp = ControlPlaneSettings.model_fields
    assert agent_ports == {AgentSettings.model_fields["port"].default}
    assert cp_ports == {cp["port"].default, cp["gateway_port"].default}


def test_image_environment_is_read_by_our_code(
    dockerfile: Dockerfile, consumed_env: set[str]
) -> None:
    for target in FINAL:
        for name in dockerfile.env(target):
            assert name in consumed_env | STANDARD_ENV, f"{target} sets {name}, which nothing reads"
    env = dockerfile.env("agent")
    layout = Layout.from_env(env)
    assert layout.data_dir == Path("/app/data") and layout.config_file is None
    volumes = {v for i in dockerfile.stage("agent").ops("VOLUME") for v in i.words()}
    assert volumes == {"/app/config", "/app/data"}
    assert Path(env["VAULT_MASTER_KEY_FILE"]).parent == Path("/app/config")
    for target in FINAL:
        assert dockerfile.env(target)["PATH"].startswith("/opt/venv/bin:")


def test_compose_services_build_targets_and_health(
    compose: dict[str, Any], dockerfile: Dockerfile
) -> None:
    services = compose["services"]
    assert set(services) == {"control-plane", "postgres", "redis", "agent"}
    stage_names = {s.name for s in dockerfile.stages}
    for name, svc in services.items():
        assert "healthcheck" in svc, f"{name} has no healthcheck"
        for dep, cond in svc.get("depends_on", {}).items():
            assert cond == {"condition": "service_healthy"} and "healthcheck" in services[dep]
        if "build" in svc:
            assert svc["build"]["context"] == "." and svc["build"]["target"] in stage_names
            assert svc["build"]["target"] == name
            assert "test" not in svc["healthcheck"]  # the image's heartbeat check
            assert svc.get("init") is True  # PID 1 that forwards SIGTERM and reaps
            assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
            assert svc["tmpfs"] == ["/tmp"] and "no-new-privileges:true" in svc["security_opt"]
    assert services["agent"]["depends_on"] == {"control-plane": {"condition": "service_healthy"}}


def test_compose_ports_match_the_settings(compose: dict[str, Any]) -> None:
    services = compose["services"]
    cp = ControlPlaneSettings.model_fields
    assert services["agent"]["ports"] == ["8080:8080"]
    assert AgentSettings.model_fields["port"].default == 8080
    ports = services["control-plane"]["ports"]
    published = {int(p.rsplit(":", 1)[1]) for p in ports}
    assert published == {cp["port"].default, cp["gateway_port"].default}
    # the operator API (8443) only on loopback; the gateway is mutual TLS; no service but ours
    # publishes anything (PostgreSQL and Redis stay on the compose network)
    assert f"127.0.0.1:{cp['port'].default}:{cp['port'].default}" in ports
    assert "KEYVAULT_CP_API_NAMES" in services["control-plane"]["environment"]  # API over TLS
    assert not services["postgres"].get("ports") and not services["redis"].get("ports")
    url = services["agent"]["environment"]["CONTROL_PLANE_URL"]
    assert url == f"https://control-plane:{cp['gateway_port'].default}"
    names = yaml.safe_load(services["control-plane"]["environment"]["KEYVAULT_CP_GATEWAY_NAMES"])
    assert "control-plane" in names  # the gateway's certificate must name what agents dial
    ControlPlaneSettings(gateway_names=names)


def test_compose_environment_is_read_by_our_code_and_holds_no_secret(
    compose: dict[str, Any], consumed_env: set[str]
) -> None:
    services = compose["services"]
    for name in ("agent", "control-plane"):
        for key, value in services[name]["environment"].items():
            assert key in consumed_env, f"{name}: {key} is read by nothing"
            secretish = any(w in key for w in ("PASSWORD", "PASSPHRASE", "SECRET", "TOKEN"))
            assert not secretish or key.endswith("_FILE"), f"{name}: {key} inlines a secret"
            assert "@" not in str(value), f"{name}: {key} looks like a URL with credentials"
    assert "KEYVAULT_CP_REDIS_URL" not in services["control-plane"]["environment"]
    assert services["redis"]["command"][:2] == ["redis-server", "/run/secrets/redis_conf"]
    pg_env = services["postgres"]["environment"]
    assert "POSTGRES_PASSWORD" not in pg_env and "POSTGRES_PASSWORD_FILE" in pg_env
    declared = set(compose["secrets"])
    for name, svc in services.items():
        used = set(svc.get("secrets", []))
        assert used <= declared
        for value in svc.get("environment", {}).values():
            if str(value).startswith("/run/secrets/"):
                assert str(value).removeprefix("/run/secrets/") in used, (name, value)


def test_compose_paths_exist_after_init_script(compose: dict[str, Any], tmp_path: Path) -> None:
    """Run deploy/docker/init.sh in a scratch folder: every host path the compose file names exists."""
    done = subprocess.run(
        ["sh", str(ROOT / "deploy" / "docker" / "init.sh")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
    )
    assert done.returncode == 0, done.stderr
    agent = compose["services"]["agent"]
    mounts = dict(v.split(":", 1) for v in agent["volumes"])
    assert mounts == {"./config": "/app/config", "./data": "/app/data"}
    for host in mounts:
        assert (tmp_path / host).is_dir()
    for secret in compose["secrets"].values():
        assert (tmp_path / secret["file"]).is_file() and (tmp_path / secret["file"]).stat().st_size
    # container paths in the agent's environment resolve under its mounts
    env = agent["environment"]
    for key in ("VAULT_MASTER_KEY_FILE", "KEYVAULT_ENROLLMENT_TOKEN_FILE"):
        inside = Path(env[key])
        host_dir = next(h for h, c in mounts.items() if inside.parent == Path(c))
        assert (tmp_path / host_dir / inside.name).exists(), key
    KeySource.from_key_file(tmp_path / "config" / "master.key")  # a valid 32-byte key
    url = (tmp_path / "secrets" / "cp_database_url").read_text().strip()
    ControlPlaneSettings(database_url=url)
    pg_password = (tmp_path / "secrets" / "postgres_password").read_text().strip()
    assert f":{pg_password}@postgres:5432/keyvault" in url
    assert pg_password not in done.stdout + done.stderr
    redis_conf = (tmp_path / "secrets" / "redis_conf").read_text().split()
    assert redis_conf[0] == "requirepass" and len(redis_conf[1]) == 64
    redis_url = (tmp_path / "secrets" / "cp_redis_url").read_text().strip()
    assert redis_url == f"redis://:{redis_conf[1]}@redis:6379/0"
    assert redis_conf[1] not in done.stdout + done.stderr
    ControlPlaneSettings(redis_url=redis_url)
    (tmp_path / "config" / "agent.yaml").rename(tmp_path / "agent.yaml")
    from common.settings import load_settings

    load_settings(AgentSettings, tmp_path / "agent.yaml")  # the example config is valid
