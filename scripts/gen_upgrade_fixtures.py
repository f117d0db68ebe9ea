"""Build the upgrade fixtures from a previous release's code (docs/upgrading.md).

    .venv/bin/python scripts/gen_upgrade_fixtures.py [--commit b496547]

Needs git, the PostgreSQL server of tests/conftest.py (``KEYVAULT_TEST_PG``) and ``pg_dump``.
The previous release's tree is taken with ``git archive`` into a temporary folder and run with
this virtualenv's interpreter (same dependencies). It writes into ``tests/fixtures/upgrade/``:

- ``agent-<version>-<commit>.tar.gz``: ``data/`` made by that release's ``keyvault agent init``
  and ``run`` (secrets with versions, a deleted secret, a second token, audit entries),
  ``master.key`` and ``admin.token`` (test-only keys, no real secret), ``manifest.json`` (what
  the test expects, and the folder the paths in ``agent.yaml`` were written for);
- ``control-plane-<version>-<commit>.sql.gz``: ``pg_dump`` of a database that release migrated
  and seeded (``control-plane init``, an enrollment token, an enrolled agent), and
  ``control-plane-<version>-<commit>.json`` (owner, passphrase of its test-only CA key).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "upgrade"
# a fixed folder, so agent.yaml's paths are the same at every regeneration (the test rewrites them)
FIXTURE_ROOT = Path("/tmp/keyvault-upgrade-fixture")  # noqa: S108
PG = os.environ.get("KEYVAULT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
OWNER = "owner@upgrade.test"
OWNER_PASSWORD = "upgrade fixture owner password"  # noqa: S105 (test-only)
CA_PASSPHRASE = "upgrade-fixture-ca-passphrase"  # noqa: S105 (test-only)
SECRETS = {
    "fixture/db-password": ["not-a-real-secret-v1", "not-a-real-secret-v2"],
    "fixture/api-key": ["fixture-api-key"],
}
DELETED = "fixture/deleted"


def _wait_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the previous release exited with {proc.returncode}")
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {path}")


def _prev_tree(commit: str, into: Path) -> Path:
    src = into / "src"
    src.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(src, filter="data")
    where = subprocess.run(
        [sys.executable, "-c", "import agent, control_plane; print(agent.__file__)"],
        cwd=src,
        env=_env(src),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).is_relative_to(src):  # an installed copy would shadow the old code
        raise SystemExit(f"the previous release's tree is not the one imported ({where})")
    return src


def _version(src: Path) -> str:
    for line in (src / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise SystemExit("no version in pyproject.toml")


def _env(src: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
    env.update(PYTHONPATH=str(src), **extra)
    return env


def build_agent(src: Path, commit: str, version: str) -> Path:
    """Run the previous release's agent and pack its folder."""
    from common.client import AgentClient

    shutil.rmtree(FIXTURE_ROOT, ignore_errors=True)
    FIXTURE_ROOT.mkdir(parents=True)
    data, key, token_file = (
        FIXTURE_ROOT / "data",
        FIXTURE_ROOT / "master.key",
        FIXTURE_ROOT / "admin.token",
    )
    cli = [sys.executable, "-m", "apps.cli.main", "agent"]
    env = _env(src)
    subprocess.run(
        [
            *cli,
            "init",
            "--data-dir",
            str(data),
            "--key-file",
            str(key),
            *("--port", "0"),
            *("--token-file", str(token_file)),
        ],
        check=True,
        cwd=src,
        env=env,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [*cli, "run", "--data-dir", str(data)], cwd=src, env=env, stderr=subprocess.DEVNULL
    )
    try:
        url = _wait_file(data / "agent.url", proc)
        token = token_file.read_text().strip()
        tls = data / "tls"
        with AgentClient(
            url,
            token,
            ca_file=tls / "ca.crt",
            cert_file=tls / "client.crt",
            key_file=tls / "client.key",
        ) as kv:
            for name, values in SECRETS.items():
                kv.create(name, values[0])
                for value in values[1:]:
                    kv.update(name, value)
            kv.create(DELETED, "gone")
            kv.delete(DELETED)
            reader = kv.create_token(
                "fixture-reader", [{"path": "fixture/**", "capabilities": ["read"]}]
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    manifest = {
        "release": version,
        "commit": commit,
        "root": str(FIXTURE_ROOT),
        "secrets": {name: values[-1] for name, values in SECRETS.items()},
        "versions": {name: len(values) for name, values in SECRETS.items()},
        "deleted": DELETED,
        "reader_token": reader["token"],
    }
    (FIXTURE_ROOT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    target = OUT / f"agent-{version}-{commit}.tar.gz"
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(FIXTURE_ROOT.rglob("*")):
            if path.name in {"agent.url", "agent.lock", "agent.log"}:
                continue
            info = tar.gettarinfo(str(path), str(path.relative_to(FIXTURE_ROOT)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if path.is_file():
                with path.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                tar.addfile(info)
    return target


def build_control_plane(src: Path, commit: str, version: str, work: Path) -> Path:
    """Migrate and seed a database with the previous release's control plane, then dump it."""
    import httpx
    import psycopg

    db = f"kv_upgrade_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    try:
        env = _env(
            src,
            KEYVAULT_CP_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
            KEYVAULT_CP_CA_KEY_PASSPHRASE=CA_PASSPHRASE,
            KEYVAULT_CP_OWNER_PASSWORD=OWNER_PASSWORD,
            KEYVAULT_CP_PORT="0",
            KEYVAULT_CP_GATEWAY_PORT="0",
            KEYVAULT_CP_ARGON2_TIME_COST="1",
            KEYVAULT_CP_ARGON2_MEMORY_KIB="8192",
        )
        cli = [sys.executable, "-m", "apps.cli.main"]
        subprocess.run(
            [*cli, "control-plane", "init", "--org", "Upgrade", "--email", OWNER],
            check=True,
            cwd=src,
            env=env,
            capture_output=True,
        )
        ready = work / "ready.json"
        proc = subprocess.Popen(
            [*cli, "control-plane", "run", "--ready-file", str(ready)],
            cwd=src,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            urls = json.loads(_wait_file(ready, proc))
            login = httpx.post(
                urls["api_url"] + "/api/v1/auth/login",
                json={"email": OWNER, "password": OWNER_PASSWORD},
                timeout=30,
            )
            login.raise_for_status()
            headers = {"Authorization": f"Bearer {login.json()['token']}"}
            tokens = []
            for _ in range(2):  # one to use, one left unused in the dump
                made = httpx.post(
                    urls["api_url"] + "/api/v1/enrollment-tokens",
                    json={"description": "upgrade fixture"},
                    headers=headers,
                    timeout=30,
                )
                made.raise_for_status()
                tokens.append(made.json()["token"])
            agent = work / "enrolled"
            subprocess.run(
                [*cli, "agent", "init", "--data-dir", str(agent), "--key-file", str(work / "k")],
                check=True,
                cwd=src,
                env=env,
                capture_output=True,
            )
            subprocess.run(
                [
                    *cli,
                    "agent",
                    "enroll",
                    "--data-dir",
                    str(agent),
                    "--control-plane",
                    urls["gateway_url"],
                    *("--token", tokens[0], "--name", "fixture-agent"),
                ],
                check=True,
                cwd=src,
                env=env,
                capture_output=True,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        dump = subprocess.run(
            ["pg_dump", "--no-owner", "--no-privileges", "-h", "127.0.0.1", "-U", "postgres", db],
            check=True,
            capture_output=True,
        ).stdout
    finally:
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    target = OUT / f"control-plane-{version}-{commit}.sql.gz"
    target.write_bytes(gzip.compress(dump, mtime=0))
    (OUT / f"control-plane-{version}-{commit}.json").write_text(
        json.dumps(
            {
                "release": version,
                "commit": commit,
                "owner": OWNER,
                "owner_password": OWNER_PASSWORD,
                "ca_key_passphrase": CA_PASSPHRASE,
                "org": "Upgrade",
                "vault_name": "fixture-agent",
            },
            indent=2,
        )
        + "\n"
    )
    return target


def main() -> None:
    """Build both fixtures from ``--commit``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default="b496547", help="the previous release's commit")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=7", args.commit],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kv-upgrade-") as tmp:
        src = _prev_tree(commit, Path(tmp))
        version = _version(src)
        print(build_agent(src, commit, version))
        print(build_control_plane(src, commit, version, Path(tmp)))
    shutil.rmtree(FIXTURE_ROOT, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
