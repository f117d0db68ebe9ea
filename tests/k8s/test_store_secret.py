"""The store URL's password comes only from the Secret: never in a rendered manifest, on a
command line, or in a file on the data volume. Real processes: the operator's init script runs
the real ``keyvault agent init`` (first replica, then a joining one) against a real PostgreSQL
store, and the container entrypoint initialises a folder the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from agent.settings import AgentSettings
from common.settings import load_settings
from k8s_operator.crd import parse_spec
from k8s_operator.resources import ENROLLMENT_DIR, IDENTITY_DIR, INIT_SCRIPT, build_all
from k8s_operator.tls import client_secret, load_ca, new_ca_secret, server_secret
from tests.k8s.conftest import vault_agent

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pw-Xq7-never-on-disk"


def _with_password(url: str) -> str:
    # the test server trusts local connections, so the password is carried but not needed
    return url.replace("postgres@", f"postgres:{PASSWORD}@")


def _leaks(folder: Path) -> list[str]:
    return [
        str(p)
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink() and PASSWORD.encode() in p.read_bytes()
    ]


def test_rendered_manifests_hold_no_store_url() -> None:
    body = vault_agent()
    objects = build_all(body, parse_spec("production-vault", body["spec"]))
    ca = load_ca(new_ca_secret(body))
    objects += [server_secret(body, ca), client_secret(body, ca)]
    assert "postgresql+psycopg" not in json.dumps(objects)
    (sts,) = [o for o in objects if o["kind"] == "StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    for container in [*pod["initContainers"], *pod["containers"]]:
        (url,) = [e for e in container["env"] if e["name"] == "KEYVAULT_STORAGE__URL"]
        assert url == {
            "name": "KEYVAULT_STORAGE__URL",
            "valueFrom": {"secretKeyRef": {"name": "vault-db", "key": "url"}},
        }
        assert not any("STORAGE" in " ".join(container.get(k, [])) for k in ("command", "args"))
        literal = [e["value"] for e in container["env"] if "value" in e]
        assert [v for v in literal if "://" in v] == ["https://api.keyvault.com"] * 2


def _run_init(tmp: Path, pod: str, url: str) -> tuple[str, Path]:
    """The init script with the real `keyvault` behind a shim that records its argv."""
    bindir, data = tmp / "bin", tmp / f"data-{pod}"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "keyvault"
    shim.write_text(f'#!/bin/sh\necho "$@" >> "$ARGV_LOG"\nexec {ROOT}/.venv/bin/keyvault "$@"\n')
    shim.chmod(0o755)
    script = INIT_SCRIPT.replace(IDENTITY_DIR, str(tmp / "none")).replace(
        ENROLLMENT_DIR, str(tmp / "none")
    )
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "HOME": str(tmp),
        "ARGV_LOG": str(tmp / "argv.log"),
        "KEYVAULT_DATA_DIR": str(data),
        "KEYVAULT_MASTER_KEY_FILE": str(tmp / "master.key"),
        "KEYVAULT_PORT": "8080",
        "KEYVAULT_STORAGE__URL": url,
        "POD_NAME": pod,
        "CONTROL_PLANE_URL": "https://cp.invalid",
    }
    done = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    log = tmp / "argv.log"
    return (log.read_text() if log.exists() else ""), data


def test_init_script_keeps_the_password_off_argv_and_disk(tmp_path: Path, pg_url: str) -> None:
    from agent.crypto import generate_key_file

    generate_key_file(tmp_path / "master.key")
    url = _with_password(pg_url)
    argv, first = _run_init(tmp_path, "vault-0", url)
    argv, second = _run_init(tmp_path, "vault-1", url)  # joins the vault vault-0 made
    lines = argv.splitlines()
    assert len(lines) == 2 and lines[1].endswith("--storage-url-from-env --join"), lines
    assert PASSWORD not in argv
    for data in (first, second):
        assert _leaks(data) == []
        stored = yaml.safe_load((data / "agent.yaml").read_text())["storage"]["url"]
        assert stored == pg_url  # the URL without its password (a missing variable fails loudly)
        # the agent gets the full URL back from the environment at every start
        os.environ["KEYVAULT_STORAGE__URL"] = url
        try:
            settings = load_settings(AgentSettings, data / "agent.yaml")
        finally:
            del os.environ["KEYVAULT_STORAGE__URL"]
        assert settings.storage_url == url


def test_container_entrypoint_keeps_the_password_off_disk(tmp_path: Path, pg_url: str) -> None:
    from agent.crypto import generate_key_file

    generate_key_file(tmp_path / "master.key")
    url = _with_password(pg_url)
    code = (
        "import os, sys; from agent.docker_entrypoint import prepare; "
        "prepare(os.environ); print(open('/proc/self/cmdline','rb').read())"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "KEYVAULT_APP_DIR": str(tmp_path / "app"),
        "KEYVAULT_DATA_DIR": str(tmp_path / "data"),
        "VAULT_MASTER_KEY_FILE": str(tmp_path / "master.key"),
        "KEYVAULT_STORAGE__URL": url,
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert _leaks(tmp_path / "data") == []
    stored = yaml.safe_load((tmp_path / "data" / "agent.yaml").read_text())["storage"]["url"]
    assert stored == pg_url


def test_a_folder_from_an_older_operator_loses_the_password_at_the_next_start(
    tmp_path: Path, pg_url: str
) -> None:
    from agent.crypto import generate_key_file

    generate_key_file(tmp_path / "master.key")
    url = _with_password(pg_url)
    data = tmp_path / "data-vault-0"
    old = subprocess.run(  # what the older operator's init script ran
        [
            f"{ROOT}/.venv/bin/keyvault",
            "agent",
            "init",
            "--data-dir",
            str(data),
            "--key-file",
            str(tmp_path / "master.key"),
            "--storage-url",
            url,
        ],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        timeout=120,
    )
    assert old.returncode == 0, old.stderr
    assert _leaks(data) == [str(data / "agent.yaml")]
    _run_init(tmp_path, "vault-0", url)  # the pod restarts under this operator
    assert _leaks(data) == []
    assert yaml.safe_load((data / "agent.yaml").read_text())["storage"]["url"] == pg_url
