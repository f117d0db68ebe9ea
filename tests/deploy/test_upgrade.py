"""Upgrading from the previous release's data (docs/upgrading.md).

The fixtures in ``tests/fixtures/upgrade/`` were made by the previous release's own code
(``scripts/gen_upgrade_fixtures.py`` runs it from ``git archive <commit>``): an agent data
folder, and a ``pg_dump`` of a control-plane database. These tests open them with the current
code: the agent migrates its store, serves every secret and token and its audit chain verifies;
the control plane's migrations upgrade the dump and the control plane serves it.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from importlib import resources
from pathlib import Path

import httpx
import psycopg
import pytest

from agent.store.db import Store
from agent.store.migrations import HEAD_REVISION
from common.errors import NotFoundError, PermissionDeniedError
from tests.conftest import AgentDir, fresh_pg_database, need_service, start_agent

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upgrade"
CLI = [sys.executable, "-m", "apps.cli.main"]
AGENT_FIXTURES = sorted(FIXTURES.glob("agent-*.tar.gz"))
CP_FIXTURES = sorted(FIXTURES.glob("control-plane-*.sql.gz"))


def _unpack_agent(fixture: Path, into: Path) -> dict[str, object]:
    with tarfile.open(fixture) as tar:
        tar.extractall(into, filter="data")
    manifest = json.loads((into / "manifest.json").read_text())
    config = into / "data" / "agent.yaml"  # its paths name the folder it was made in
    config.write_text(config.read_text().replace(str(manifest["root"]), str(into)))
    return manifest


def test_there_is_a_fixture_per_component() -> None:
    assert AGENT_FIXTURES and CP_FIXTURES  # regenerate: scripts/gen_upgrade_fixtures.py


@pytest.mark.parametrize("fixture", AGENT_FIXTURES, ids=lambda p: p.name)
def test_the_agent_opens_migrates_and_serves_a_previous_release_folder(
    fixture: Path, tmp_path: Path
) -> None:
    root = tmp_path / "kv"
    manifest = _unpack_agent(fixture, root)
    data = root / "data"
    before = Store(f"sqlite:///{data / 'store.db'}")
    try:
        old_revision = before.revision()
    finally:
        before.close()
    assert old_revision is not None and old_revision <= HEAD_REVISION
    token = (root / "admin.token").read_text().strip()
    running = start_agent(AgentDir(data, token), timeout=60)
    try:
        with running.client() as kv:
            for name, value in dict(manifest["secrets"]).items():  # type: ignore[call-overload]
                assert kv.get(name)["value"] == value
                assert len(kv.versions(name)["versions"]) == manifest["versions"][name]  # type: ignore[index]
            with pytest.raises(NotFoundError):
                kv.get(str(manifest["deleted"]))
            kv.create("after/upgrade", "written-by-the-new-code")
        with running.client(str(manifest["reader_token"])) as reader:  # a token made back then
            assert reader.get("fixture/api-key")["value"] == manifest["secrets"]["fixture/api-key"]  # type: ignore[index]
            with pytest.raises(PermissionDeniedError):
                reader.create("fixture/new", "not allowed")
    finally:
        assert running.stop() == 0
    after = Store(f"sqlite:///{data / 'store.db'}")
    try:
        assert after.revision() == HEAD_REVISION
    finally:
        after.close()
    verify = subprocess.run(
        [*CLI, "agent", "audit", "verify", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr  # old entries and new, one chain


def _load_dump(dump: Path, database: str) -> None:
    psql = shutil.which("psql")
    if psql is None:
        need_service("psql", FileNotFoundError("not on PATH"))
    assert psql is not None
    done = subprocess.run(
        [psql, "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-q", "-v", "ON_ERROR_STOP=1"],
        input=gzip.decompress(dump.read_bytes()),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def _cp_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("control_plane") / "migrations"))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


@pytest.mark.postgres
@pytest.mark.parametrize("dump", CP_FIXTURES, ids=lambda p: p.name)
def test_the_control_plane_upgrades_a_previous_release_database(dump: Path, tmp_path: Path) -> None:
    facts = json.loads(dump.with_name(dump.name.removesuffix(".sql.gz") + ".json").read_text())
    with fresh_pg_database("kv_upgrade") as db:
        _load_dump(dump, db)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYVAULT_")}
        env.update(
            KEYVAULT_CP_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}",
            KEYVAULT_CP_CA_KEY_PASSPHRASE=facts["ca_key_passphrase"],
            KEYVAULT_CP_PORT="0",
            KEYVAULT_CP_GATEWAY_PORT="0",
        )
        migrate = subprocess.run(
            [*CLI, "control-plane", "migrate"], env=env, capture_output=True, text=True, timeout=120
        )
        assert migrate.returncode == 0, migrate.stderr[-2000:]
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{db}") as conn:
            row = conn.execute("SELECT version_num FROM cp_alembic_version").fetchone()
        assert row == (_cp_head(),)
        ready = tmp_path / "ready.json"
        log = (tmp_path / "cp.log").open("wb")
        proc = subprocess.Popen(
            [*CLI, "control-plane", "run", "--ready-file", str(ready)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not (ready.exists() and ready.stat().st_size) and proc.poll() is None:
                assert time.monotonic() < deadline, "the control plane did not start"
                time.sleep(0.05)
            assert proc.poll() is None, (tmp_path / "cp.log").read_text()[-2000:]
            api = json.loads(ready.read_text())["api_url"] + "/api/v1"
            login = httpx.post(
                api + "/auth/login",
                json={"email": facts["owner"], "password": facts["owner_password"]},
                timeout=30,
            )
            assert login.status_code == 200, login.text  # the owner made by the old release
            headers = {"Authorization": f"Bearer {login.json()['token']}"}
            vaults = httpx.get(api + "/vaults", headers=headers, timeout=30)
            assert vaults.status_code == 200, vaults.text
            assert facts["vault_name"] in vaults.text  # the agent enrolled back then
            made = httpx.post(
                api + "/enrollment-tokens", json={"description": "after upgrade"}, headers=headers
            )
            assert made.status_code == 201, made.text  # a write, with the CA made back then
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
        assert "Traceback" not in (tmp_path / "cp.log").read_text()


FORBIDDEN_IN_UPGRADE = {
    "drop_table",
    "drop_column",
    "drop_index",
    "alter_column",
    "rename_table",
    "drop_constraint",
    "execute",
}


def _upgrade_violations(path: Path) -> list[str]:
    import ast

    tree = ast.parse(path.read_text())
    found = []
    for fn in tree.body:
        if not (isinstance(fn, ast.FunctionDef) and fn.name == "upgrade"):
            continue
        for node in ast.walk(fn):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr in FORBIDDEN_IN_UPGRADE:
                found.append(f"{path.name}: {node.func.attr}")
            if node.func.attr == "add_column":
                for col in ast.walk(node):
                    if isinstance(col, ast.Call) and getattr(col.func, "attr", "") == "Column":
                        words = {k.arg: k.value for k in col.keywords}
                        not_null = isinstance(words.get("nullable"), ast.Constant) and (
                            words["nullable"].value is False  # type: ignore[attr-defined]
                        )
                        if not_null and "server_default" not in words:
                            found.append(f"{path.name}: NOT NULL column without a default")
    return found


@pytest.mark.parametrize("package", ["agent.store", "control_plane"])
def test_migrations_only_add_so_old_replicas_keep_working(package: str) -> None:
    """The version-skew rule of docs/upgrading.md: a migration (agent store or control plane)
    adds tables, indexes and nullable (or defaulted) columns only, so replicas still on the
    previous release keep reading and writing the migrated schema during a rolling upgrade."""
    versions = resources.files(package) / "migrations" / "versions"
    files = sorted(Path(str(versions)).glob("0*.py"))
    assert len(files) >= 4
    assert [v for f in files for v in _upgrade_violations(f)] == []


def test_the_additivity_check_catches_a_drop(tmp_path: Path) -> None:
    bad = tmp_path / "0099_bad.py"
    bad.write_text(
        "def upgrade():\n"
        "    op.drop_column('kv_tokens', 'mac')\n"
        "    with op.batch_alter_table('t') as b:\n"
        "        b.add_column(sa.Column('x', sa.String(4), nullable=False))\n"
    )
    assert _upgrade_violations(bad) == [
        "0099_bad.py: drop_column",
        "0099_bad.py: NOT NULL column without a default",
    ]
