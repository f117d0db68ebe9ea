"""Shared fixtures: real PostgreSQL databases, initialised agent folders, running agents."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.client import AgentClient

# Real-Windows tests run only in the Windows CI job (.github/workflows/windows.yml); elsewhere
# they are not collected at all, so a Linux run has nothing skipped (simulated Windows is
# tests/deploy/test_windows_portability.py)
collect_ignore = [] if sys.platform == "win32" else ["deploy/test_windows_real.py"]

CI = os.environ.get("CI") == "true"
PG_ADMIN_URL = os.environ.get("KEYVAULT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def need_service(name: str, error: Exception) -> None:
    """Fail under CI, skip elsewhere, when a real service is missing."""
    message = f"{name} is not reachable: {error}"
    if CI:
        pytest.fail(message)
    pytest.skip(message)


#: emptied databases this test process made, by prefix, ready for the next test that asks
_PG_SPARE: dict[str, list[str]] = {}
#: schemas every new database has; anything else a test made is dropped
_PG_SPARE_DROP_REGISTERED: list[bool] = []  # whether the exit hook is set (once per process)
_PG_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema', 'pg_toast')"


@contextlib.contextmanager
def fresh_pg_database(prefix: str = "kv_test") -> Iterator[str]:
    """Yield the name of an empty PostgreSQL database of its own for one user, then empty it.

    ``DROP DATABASE`` makes the server take a checkpoint (about a second on a busy machine,
    hundreds of times per run), so a used database is emptied instead (its other sessions
    ended, every schema dropped, ``public`` made again as ``CREATE DATABASE`` makes it) and
    given to the next caller in this process; databases that cannot be emptied are dropped,
    and the spare ones are dropped when the test process ends.
    """
    import psycopg

    spare = _PG_SPARE.setdefault(prefix, [])
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        need_service("PostgreSQL", exc)
    with admin:
        if spare:
            name = spare.pop()
        else:
            name = f"{prefix}_{uuid.uuid4().hex[:12]}"
            admin.execute(f'CREATE DATABASE "{name}"')
            if not _PG_SPARE_DROP_REGISTERED:
                _PG_SPARE_DROP_REGISTERED.append(True)
                atexit.register(_drop_spare_databases)
    try:
        yield name
    finally:
        if _empty_database(name):
            spare.append(name)
        else:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _empty_database(name: str) -> bool:
    """End every other session on ``name`` and drop everything in it; False if that failed."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            schemas = [
                row[0]
                for row in conn.execute(
                    "SELECT nspname FROM pg_namespace WHERE nspname NOT IN "
                    f"{_PG_SYSTEM_SCHEMAS} AND nspname NOT LIKE 'pg\\_%'"
                )
            ]
            with conn.transaction():
                for schema in schemas:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
                conn.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
                conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
                conn.execute("COMMENT ON SCHEMA public IS 'standard public schema'")
    except psycopg.Error:
        return False
    return True


def _drop_spare_databases() -> None:
    """Drop the emptied databases kept for reuse (at the test process's exit)."""
    import psycopg

    names = [name for names in _PG_SPARE.values() for name in names]
    if not names:
        return
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin,
    ):
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_sqlalchemy_url(name: str) -> str:
    """The SQLAlchemy URL of a test database on the local server."""
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    with fresh_pg_database() as name:
        yield pg_sqlalchemy_url(name)


@dataclass
class AgentDir:
    """An initialised agent data folder."""

    path: Path
    token: str

    @property
    def tls(self) -> Path:
        """Its TLS folder."""
        return self.path / "tls"


def init_agent_dir(
    path: Path, *, storage_url: str | None = None, client_cert: str = "optional", port: int = 0
) -> AgentDir:
    """Initialise an agent folder (key-file master key) and return it with its admin token."""
    from agent.provision import InitOptions, initialise

    # the key file is named explicitly (tests read it beside the store); `init`'s own default
    # puts it outside the data folder (tests/agent/test_edges_process.py)
    result = initialise(
        InitOptions(
            path,
            key_file=path / "master.key",
            storage_url=storage_url,
            client_cert_mode=client_cert,
            port=port,
        )
    )
    return AgentDir(path, result.admin_token)


@pytest.fixture
def agent_dir(tmp_path: Path) -> AgentDir:
    """A fresh SQLite agent folder."""
    return init_agent_dir(tmp_path / "agent")


@dataclass
class AgentProcess:
    """An agent running as a real child process."""

    dir: AgentDir
    proc: subprocess.Popen[bytes]
    url: str

    def client(self, token: str | None = None, *, cert: bool = True) -> AgentClient:
        """A mutual-TLS client with the admin token (or another)."""
        tls = self.dir.tls
        return AgentClient(
            self.url,
            token or self.dir.token,
            ca_file=tls / "ca.crt",
            cert_file=tls / "client.crt" if cert else None,
            key_file=tls / "client.key" if cert else None,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the agent and wait for it to exit; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def start_agent(
    agent: AgentDir, *extra: str, env: dict[str, str] | None = None, timeout: float = 30
) -> AgentProcess:
    """Start ``keyvault agent run`` on a folder and wait until it serves."""
    url_file = agent.path / "agent.url"
    url_file.unlink(missing_ok=True)
    log = open(agent.path / "agent.log", "ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apps.cli.main",
            "agent",
            "run",
            "--data-dir",
            str(agent.path),
            *extra,
        ],
        stdout=log,
        stderr=log,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"agent exited with {proc.returncode}: {(agent.path / 'agent.log').read_text()[-2000:]}"
            )
        if url_file.exists() and url_file.read_text().strip():
            return AgentProcess(agent, proc, url_file.read_text().strip())
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("agent did not start in time")


@pytest.fixture
def agent_process(agent_dir: AgentDir) -> Iterator[AgentProcess]:
    """A real agent process on a fresh SQLite folder, stopped after the test."""
    running = start_agent(agent_dir)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.stop()


# Files that run long (real processes end to end, the README walk, Docker, many agents), longest
# first: they go to the workers first, so no long file is left running alone at the end of the
# suite. The seconds are each file's total in a clean-clone run of the test command (`-n 3`, quiet
# machine; docs/performance.md, "Issue 18, round 5"); every file of 15 s or more is listed.
# A folder would stand for every file in it. tests/test_slow_first.py checks each entry exists.
SLOW_FIRST = (
    "tests/e2e/test_rotation.py",  # 119 s
    "tests/apps/test_demo.py",  # 58 s
    "tests/e2e/test_outage.py",  # 50 s
    "tests/e2e/test_cp_edges.py",  # 39 s
    "tests/deploy/test_binary.py",  # 39 s
    "tests/control_plane/test_login_throttle.py",  # 35 s
    "tests/e2e/test_worker_audit.py",  # 34 s
    "tests/e2e/test_enrollment.py",  # 32 s
    "tests/deploy/test_docker_stack.py",  # 30 s
    "tests/control_plane/test_schemathesis.py",  # 30 s
    "tests/agent/test_edges_process.py",  # 28 s
    "tests/agent/test_workers.py",  # 28 s
    "tests/e2e/test_hostile_control_plane.py",  # 25 s
    "tests/agent/test_process.py",  # 24 s
    "tests/e2e/test_audit_loss.py",  # 22 s
    "tests/docs/test_readme.py",  # 21 s
    "tests/agent/test_rotation_process.py",  # 20 s
    "tests/control_plane/test_revocation.py",  # 20 s
    "tests/deploy/test_operator_pods.py",  # 20 s
    "tests/apps/tui/test_app.py",  # 19 s
    "tests/agent/test_schemathesis.py",  # 18 s
    "tests/agent/test_glob_bounds.py",  # 17 s
    "tests/control_plane/test_gateway_offline.py",  # 17 s
    "tests/agent/test_audit_replicas.py",  # 17 s
    "tests/agent/test_uplink.py",  # 16 s
)


def pytest_configure(config: pytest.Config) -> None:
    """Keep SLOW_FIRST's order under ``--dist loadfile``: xdist would otherwise hand out files
    by test count, most first, which sends the long files of few tests (end to end, Docker) last."""
    if hasattr(config.option, "loadscopereorder"):  # only with pytest-xdist
        config.option.loadscopereorder = False


def slow_rank(rel: str) -> int:
    """Where a test file (path relative to the root) goes: its SLOW_FIRST index, else last."""
    for rank, prefix in enumerate(SLOW_FIRST):
        if rel.startswith(prefix):
            return rank
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the long files first, longest first (stable: the order inside each file is kept)."""
    root = Path(str(config.rootpath))
    items.sort(key=lambda item: slow_rank(Path(str(item.path)).relative_to(root).as_posix()))
