"""The container entrypoints run outside a container, as real processes.

A temporary folder stands in for ``/app`` (``KEYVAULT_APP_DIR``). The agent initialises on first
start, serves its health over its own TLS, keeps its identity on a restart and exits 0 on
SIGTERM; a missing key stops it with one line and nothing created. The control plane migrates a
fresh PostgreSQL database, serves, creates its first organisation, and an agent started with an
enrollment token file enrolls and connects, as in docker-compose.yml.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from agent import docker_entrypoint as agent_container
from agent.crypto import generate_key_file
from common.client import AgentClient
from common.errors import ConfigError
from control_plane import container as cp_container
from tests.conftest import fresh_pg_database
from tests.e2e.conftest import wait_for

OWNER = "owner@deploy.test"


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any KeyVault variable, plus ``extra``."""
    ours = ("KEYVAULT_", "VAULT_MASTER", "CONTROL_PLANE_URL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    return {**env, **extra}


def start(module: str, env: dict[str, str], ready: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m module`` and wait until it writes ``ready``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while not (ready.exists() and ready.stat().st_size):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{module} did not start: {log.read_text()[-3000:]}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then the exit code."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def run(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``python -m module args`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A stand-in for the agent's /app with a master key in config/."""
    (tmp_path / "app" / "config").mkdir(parents=True)
    generate_key_file(tmp_path / "app" / "config" / "master.key")
    return tmp_path / "app"


def agent_env(app: Path, **extra: str) -> dict[str, str]:
    """The agent image's environment, on loopback and any free port."""
    return clean_env(
        KEYVAULT_APP_DIR=str(app),
        VAULT_MASTER_KEY_FILE=str(app / "config" / "master.key"),
        KEYVAULT_BIND="127.0.0.1",
        KEYVAULT_PORT="0",
        KEYVAULT_TLS_HOSTNAMES="agent",
        **extra,
    )


def agent_client(data: Path, token: str | None = None) -> AgentClient:
    """A mutual-TLS client of the agent whose data folder is ``data``."""
    tls = data / "tls"
    url = (data / "agent.url").read_text().strip()
    return AgentClient(
        url,
        token,
        ca_file=tls / "ca.crt",
        cert_file=tls / "client.crt",
        key_file=tls / "client.key",
    )


def test_agent_initialises_serves_restarts_and_stops_on_sigterm(app: Path) -> None:
    data, env, log = app / "data", agent_env(app), app / "agent.log"
    proc = start("agent.docker_entrypoint", env, data / "agent.url", log)
    try:
        token_file = data / "admin.token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        with agent_client(data, token) as kv:
            first = kv.health()
            assert first["status"] == "healthy" and first["uplink"]["state"] == "not_enrolled"
            assert kv.list_tokens()["tokens"]  # the written admin token works
        cert = x509.load_pem_x509_certificate((data / "tls" / "server.crt").read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "agent" in sans.get_values_for_type(x509.DNSName)
        check = run("agent.docker_entrypoint", "health", env=env)
        assert (check.returncode, check.stdout.strip()) == (0, "healthy"), check.stderr
    finally:
        assert stop(proc) == 0
    assert not (data / "agent.url").exists()
    assert token not in log.read_text()
    proc = start(
        "agent.docker_entrypoint", env, data / "agent.url", log
    )  # second start: no new vault
    try:
        with agent_client(data) as kv:
            assert kv.health()["vault_id"] == first["vault_id"]
        assert token_file.read_text().strip() == token
    finally:
        assert stop(proc) == 0
    assert run("agent.docker_entrypoint", "health", env=env).returncode != 0


def test_agent_without_its_key_file_stops_with_one_line(app: Path) -> None:
    (app / "config" / "master.key").unlink()
    done = run("agent.docker_entrypoint", env=agent_env(app))
    assert done.returncode == 78, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: master key file ")
    assert "VAULT_MASTER_KEY_FILE" in lines[0]
    assert not (app / "data").exists() and not (app / "config" / "master.key").exists()


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Make ``env`` the whole environment of this test (for in-process calls of ``main``)."""
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_agent_without_any_key_or_with_a_bad_command(
    app: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = agent_env(app)
    del env["VAULT_MASTER_KEY_FILE"]
    use_env(monkeypatch, env)
    assert agent_container.main([]) == 78
    err = capsys.readouterr().err
    assert err.startswith("error: no master key") and len(err.strip().splitlines()) == 1
    assert not (app / "data").exists()
    assert agent_container.main(["bogus"]) == 64
    assert "usage" in capsys.readouterr().err


def test_enrollment_token_sources(tmp_path: Path) -> None:
    token_file = tmp_path / "enrollment.token"
    token_file.write_text("\n")
    file_env = {"KEYVAULT_ENROLLMENT_TOKEN_FILE": str(token_file)}
    assert agent_container.enrollment_token(file_env) is None  # the empty placeholder
    token_file.write_text("kve_x.y\n")
    assert agent_container.enrollment_token(file_env) == "kve_x.y"
    assert agent_container.enrollment_token({"KEYVAULT_ENROLLMENT_TOKEN": "kve_z"}) == "kve_z"
    with pytest.raises(ConfigError, match="KEYVAULT_ENROLLMENT_TOKEN_FILE"):
        agent_container.enrollment_token({"KEYVAULT_ENROLLMENT_TOKEN_FILE": str(tmp_path / "no")})


@pytest.fixture
def cp_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The control-plane image's environment over a fresh PostgreSQL database (secrets in files)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "ca").write_text("a ca key passphrase for the test\n")
    (secrets / "owner").write_text("the owner password of the test\n")
    with fresh_pg_database("kv_deploy") as db:
        (secrets / "db").write_text(f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}\n")
        yield clean_env(
            KEYVAULT_APP_DIR=str(tmp_path / "cp"),
            KEYVAULT_CP_DATABASE_URL_FILE=str(secrets / "db"),
            KEYVAULT_CP_CA_KEY_FILE=str(secrets / "ca"),
            KEYVAULT_CP_OWNER_PASSWORD_FILE=str(secrets / "owner"),
            KEYVAULT_CP_PORT="0",
            KEYVAULT_CP_GATEWAY_PORT="0",
            KEYVAULT_CP_READY_FILE=str(tmp_path / "ready.json"),
            KEYVAULT_CP_ARGON2_TIME_COST="1",
            KEYVAULT_CP_ARGON2_MEMORY_KIB="8192",
        )


def enrollment_token(api_url: str) -> str:
    """Log in as the owner and mint an enrollment token."""
    login = httpx.post(
        api_url + "/api/v1/auth/login",
        json={"email": OWNER, "password": "the owner password of the test"},
        timeout=30,
    )
    login.raise_for_status()
    made = httpx.post(
        api_url + "/api/v1/enrollment-tokens",
        json={"description": "compose"},
        headers={"Authorization": f"Bearer {login.json()['token']}"},
        timeout=30,
    )
    made.raise_for_status()
    return str(made.json()["token"])


def test_control_plane_migrates_serves_and_an_agent_enrolls(
    cp_env: dict[str, str], app: Path, tmp_path: Path
) -> None:
    ready = Path(cp_env["KEYVAULT_CP_READY_FILE"])
    cp = start("control_plane.container", cp_env, ready, tmp_path / "cp.log")
    try:
        urls = json.loads(ready.read_text())
        assert httpx.get(urls["api_url"] + "/api/v1/health", timeout=10).status_code == 200
        check = run("control_plane.container", "health", env=cp_env)
        assert check.returncode == 0, check.stderr
        made = run(
            "control_plane.container", "init", "--org", "Deploy", "--email", OWNER, env=cp_env
        )
        assert made.returncode == 0, made.stderr
        token = enrollment_token(urls["api_url"])
        (app / "config" / "enrollment.token").write_text(token + "\n")
        env = agent_env(
            app,
            CONTROL_PLANE_URL=urls["gateway_url"],
            KEYVAULT_ENROLLMENT_TOKEN_FILE=str(app / "config" / "enrollment.token"),
        )
        agent = start(
            "agent.docker_entrypoint", env, app / "data" / "agent.url", tmp_path / "agent.log"
        )
        try:
            with agent_client(app / "data") as kv:
                wait_for(lambda: kv.health()["uplink"]["state"] == "connected", what="uplink")
        finally:
            assert stop(agent) == 0
        assert token not in (tmp_path / "agent.log").read_text()
    finally:
        assert stop(cp) == 0


def test_control_plane_without_ca_passphrase_or_database_url_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_env(monkeypatch, clean_env(KEYVAULT_APP_DIR=str(tmp_path)))
    assert cp_container.main([]) == 78
    err = capsys.readouterr().err
    assert err.startswith("error: no CA key passphrase") and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("KEYVAULT_CP_DATABASE_URL_FILE", str(tmp_path / "missing"))
    assert cp_container.main(["health"]) == 78
    assert "KEYVAULT_CP_DATABASE_URL_FILE" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing created


def test_control_plane_reads_the_redis_url_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """KEYVAULT_CP_REDIS_URL_FILE keeps Redis's password out of the environment; a bad file is
    one line naming the variable, with nothing created and the password never echoed."""
    use_env(monkeypatch, clean_env(KEYVAULT_APP_DIR=str(tmp_path / "app")))
    secret = tmp_path / "redis_url"
    secret.write_text("redis://:pw-9d1c@redis:6379/0\n")
    monkeypatch.setenv("KEYVAULT_CP_REDIS_URL_FILE", str(secret))
    assert cp_container.load(os.environ).redis_url == "redis://:pw-9d1c@redis:6379/0"
    secret.write_text("\n")
    assert cp_container.main(["health"]) == 78
    err = capsys.readouterr().err
    assert "KEYVAULT_CP_REDIS_URL_FILE" in err and "is empty" in err and len(err.splitlines()) == 1
    monkeypatch.setenv("KEYVAULT_CP_REDIS_URL_FILE", str(tmp_path / "missing"))
    assert cp_container.main(["health"]) == 78
    err = capsys.readouterr().err
    assert "cannot be read" in err and "pw-9d1c" not in err
    assert not (tmp_path / "app").exists()
