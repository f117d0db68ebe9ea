"""PostgreSQL servers that check passwords, for rotator tests (unit and end to end).

The shared server at ``KEYVAULT_TEST_PG`` may trust every local login, which proves nothing
about a password. :func:`private_cluster` starts a throwaway cluster (``initdb
--auth=scram-sha-256`` from the same installation); :class:`PgServer` creates throwaway roles on
a server and checks logins and stored SCRAM verifiers.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import hmac
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.conftest import need_service


@dataclass
class PgServer:
    """A PostgreSQL server reachable with an admin DSN; creates roles and drops them."""

    admin_dsn: str
    checks_passwords: bool
    roles: list[str] = field(default_factory=list)

    def admin(self) -> psycopg.Connection[Any]:
        """An autocommit admin connection."""
        return psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5)

    def dsn(self, **changes: Any) -> str:
        """The admin DSN with some parameters changed (e.g. ``port``, ``password``)."""
        params = conninfo_to_dict(self.admin_dsn)
        params.update({k: str(v) for k, v in changes.items()})
        return make_conninfo(**params)

    def create_role(self, password: str | None) -> str:
        """A new LOGIN role with a unique (and awkward, to test quoting) name."""
        name = f'kv_rot_{uuid.uuid4().hex[:10]}-"Q'
        with self.admin() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
            if password is not None:
                cur = psycopg.ClientCursor(conn)
                cur.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(name)), [password]
                )
        self.roles.append(name)
        return name

    def can_login(self, role: str, password: str, dbname: str | None = None) -> bool:
        """Whether ``role`` logs in with ``password`` (a fresh connection)."""
        params = conninfo_to_dict(self.admin_dsn)
        params.update(user=role, password=password)
        if dbname is not None:
            params["dbname"] = dbname
        try:
            with psycopg.connect(make_conninfo(**params), connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            assert "authentication failed" in str(exc)
            return False
        return True

    def verifier(self, role: str) -> str:
        """The role's stored password verifier (superuser only)."""
        with self.admin() as conn:
            row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role])
            found = row.fetchone()
        assert found is not None and found[0]
        return str(found[0])

    def drop_roles(self) -> None:
        """Drop every role this server object created."""
        with self.admin() as conn:
            for role in self.roles:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        self.roles.clear()


def scram_matches(verifier: str, password: str) -> bool:
    """Whether a ``SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`` verifier accepts ``password``."""
    method, rest = verifier.split("$", 1)
    assert method == "SCRAM-SHA-256"
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), base64.b64decode(stored_key))


def pg_bindir() -> Path | None:
    """The PostgreSQL installation's ``bin`` folder (with ``initdb``), if there is one."""
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and (Path(out.stdout.strip()) / "initdb").exists():
            return Path(out.stdout.strip())
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster that checks passwords (SCRAM); yields its admin DSN."""
    bindir = pg_bindir()
    if bindir is None:
        raise RuntimeError("no initdb found to start a password-checking PostgreSQL")
    prefix: list[str] = []
    root = tempfile.mkdtemp(prefix="kv-rot-pg-")
    admin_password = uuid.uuid4().hex
    Path(root, "pw").write_text(admin_password)
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(Path(root, "pw"), "postgres")
    data, port = Path(root, "data"), free_port()
    try:
        subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                *("-D", str(data), "--auth=scram-sha-256", "--username=postgres"),
                *(f"--pwfile={root}/pw", "-E", "UTF8", "--no-sync"),
            ],
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
        subprocess.run(
            [
                *prefix,
                str(bindir / "pg_ctl"),
                *("-D", str(data), "-o", options, "-l", f"{root}/log", "-w", "start"),
            ],
            check=True,
            capture_output=True,
        )
        try:
            yield (
                f"host=127.0.0.1 port={port} user=postgres password={admin_password} "
                "dbname=postgres"
            )
        finally:
            subprocess.run(
                [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                check=False,
                capture_output=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def private_server() -> Iterator[PgServer]:
    """A private password-checking cluster as a :class:`PgServer` (a missing PostgreSQL
    installation fails under CI, skips elsewhere); its roles are dropped afterwards."""
    with contextlib.ExitStack() as stack:
        try:
            dsn = stack.enter_context(private_cluster())
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            need_service("PostgreSQL with password authentication", exc)
        server = PgServer(dsn, checks_passwords=True)
        try:
            yield server
        finally:
            server.drop_roles()
