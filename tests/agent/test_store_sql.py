"""The store's own connection layer (agent/store/sql.py, agent/store/db.py) on both backends.

Plain SQL with ``?`` placeholders, rows with named columns, transactions that commit or roll
back as a whole, driver errors turned into clear ``UnavailableError``s without SQL or values,
the SQLite writer's held connection replaced after a failure, and PostgreSQL connections
killed under the store (as by a server restart) replaced without the agent noticing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent.store.db import Store, safe_url
from agent.store.sql import Connection, ResultError
from common.errors import ConflictError, UnavailableError

PUT = "INSERT INTO kv_meta (key, value) VALUES (?, ?)"
GET = "SELECT key, value FROM kv_meta WHERE key = ?"
SECRET_VALUE = "s3cr3t-must-not-leak"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = (
        f"sqlite:///{tmp_path / 's.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    s = Store(url)
    s.migrate()
    try:
        yield s
    finally:
        s.close()


def test_rows_have_named_columns_and_the_result_accessors_work(store: Store) -> None:
    store.write_sync(lambda c: [c.execute(PUT, (f"k{i}", f"v{i}")) for i in range(3)])

    def q(c: Connection) -> None:
        row = c.execute(GET, ("k1",)).one()
        assert (row.key, row.value) == ("k1", "v1") == tuple(row)
        assert row._mapping == {"key": "k1", "value": "v1"}
        assert c.execute(GET, ("none",)).first() is None
        assert c.execute(GET, ("none",)).one_or_none() is None
        with pytest.raises(ResultError):
            c.execute(GET, ("none",)).one()
        ordered = "SELECT key FROM kv_meta WHERE key LIKE 'k%' ORDER BY key"  # a literal %
        assert c.execute(ordered).scalars().all() == ["k0", "k1", "k2"]
        assert [r.key for r in c.execute(ordered).all()] == ["k0", "k1", "k2"]
        with pytest.raises(ResultError):
            c.execute(ordered).scalar_one()
        assert c.execute("SELECT count(*) FROM kv_meta WHERE key LIKE ?", ("k%",)).scalar() == 3
        found = c.execute(f"SELECT key FROM kv_meta WHERE key {c.regexp} ?", ("^k[12]$",))
        assert sorted(found.scalars()) == ["k1", "k2"]

    store.read_sync(q)
    updated = store.write_sync(
        lambda c: c.execute("UPDATE kv_meta SET value = ? WHERE key LIKE ?", ("x", "k%")).rowcount
    )
    assert updated == 3


def test_a_transaction_commits_or_rolls_back_as_a_whole(store: Store) -> None:
    def refused(c: Connection) -> None:
        c.execute(PUT, ("half", "written"))
        raise ConflictError("refused on purpose")

    with pytest.raises(ConflictError):
        store.write_sync(refused)

    def broken(c: Connection) -> None:
        c.execute(PUT, ("also-half", SECRET_VALUE))
        c.execute(PUT, ("also-half", SECRET_VALUE))  # the primary key: a driver error

    with pytest.raises(UnavailableError) as failed:
        store.write_sync(broken)
    assert SECRET_VALUE not in str(failed.value) and "INSERT" not in str(failed.value)

    def constraint(c: Connection) -> str:
        c.execute(PUT, ("dup", "1"))
        try:
            c.execute(PUT, ("dup", "2"))
        except c.IntegrityError:
            return "refused"
        return "stored"

    if store.backend == "sqlite":  # PostgreSQL aborts the transaction at the first error
        assert store.write_sync(constraint) == "refused"
    store.write_sync(lambda c: c.execute(PUT, ("whole", "ok")))
    keys = store.read_sync(lambda c: c.execute("SELECT key FROM kv_meta").scalars().all())
    assert "half" not in keys and "also-half" not in keys and "whole" in keys


def test_a_failed_read_says_what_failed_without_the_statement(store: Store) -> None:
    with pytest.raises(UnavailableError) as failed:
        store.read_sync(lambda c: c.execute("SELECT nope FROM kv_meta WHERE key = ?", ("k",)))
    assert str(failed.value).startswith("the store cannot be read: ")
    assert "WHERE key" not in str(failed.value)
    # the reader connection is usable again afterwards
    assert store.read_sync(lambda c: c.execute("SELECT 1").scalar()) == 1


async def test_the_sqlite_writer_keeps_its_connection_until_a_failure(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    try:
        await store.write(lambda c: c.execute(PUT, ("a", "v")))
        held = store._held
        assert held is not None
        await store.write(lambda c: c.execute(PUT, ("b", "v")))
        assert store._held is held  # one connection for the writer thread's life
        with pytest.raises(UnavailableError):
            await store.write(lambda c: c.execute("INSERT INTO no_such_table VALUES (1)"))
        assert store._held is None  # the next write opens a fresh one
        await store.write(lambda c: c.execute(PUT, ("c", "v")))
        assert store._held is not None and store._held is not held
        keys = await store.read(lambda c: c.execute("SELECT key FROM kv_meta").scalars().all())
        assert {"a", "b", "c"} <= set(keys)
    finally:
        store.close()


def _kill_connections(database: str) -> int:
    """Terminate every server process serving ``database`` (what a restart does to them)."""
    from tests.conftest import PG_ADMIN_URL

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


async def test_postgres_connections_killed_under_the_store_are_replaced(pg_url: str) -> None:
    store = Store(pg_url, readers=2)
    store.migrate()
    database = pg_url.rsplit("/", 1)[1]
    try:
        await store.write(lambda c: c.execute(PUT, ("before", "v")))
        assert await store.read(lambda c: c.execute(GET, ("before",)).one().value) == "v"
        assert _kill_connections(database) >= 1  # the writer's and a reader's pooled links
        await asyncio.sleep(0.2)
        # the pools' pre-ping finds them dead and connects again: nobody sees an error
        await store.write(lambda c: c.execute(PUT, ("after", "v")))
        rows = await asyncio.gather(
            *(store.read(lambda c: c.execute(GET, ("after",)).one().value) for _ in range(4))
        )
        assert rows == ["v"] * 4

        # killed in the middle of a transaction: that write fails clearly, the next succeeds
        def killed_mid_write(c: Connection) -> None:
            c.execute(PUT, ("mid", SECRET_VALUE))
            _kill_connections(database)
            c.execute(PUT, ("mid2", "v"))

        with pytest.raises(UnavailableError) as failed:
            await store.write(killed_mid_write)
        assert SECRET_VALUE not in str(failed.value) and "INSERT" not in str(failed.value)
        await store.write(lambda c: c.execute(PUT, ("recovered", "v")))
        keys = await store.read(lambda c: c.execute("SELECT key FROM kv_meta").scalars().all())
        assert "recovered" in keys and "mid" not in keys
    finally:
        store.close()


def test_an_unreachable_postgres_is_a_clear_error_without_the_password() -> None:
    store = Store("postgresql+psycopg://postgres:hunter2@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(UnavailableError) as failed:
            store.check()
        assert "cannot be opened" in str(failed.value)
        assert "hunter2" not in str(failed.value)
        with pytest.raises(UnavailableError) as failed:
            store.read_sync(lambda c: c.execute("SELECT 1"))
        assert "hunter2" not in str(failed.value)
        assert store.revision() is None
    finally:
        store.close()


def test_safe_url_hides_only_the_password() -> None:
    url = "postgresql+psycopg://kv%40ops:p%40ss@db.example:5432/vault?sslmode=require"
    assert (
        safe_url(url) == "postgresql+psycopg://kv%40ops:***@db.example:5432/vault?sslmode=require"
    )
    assert safe_url("sqlite:////var/lib/kv/store.db") == "sqlite:////var/lib/kv/store.db"


def test_a_bad_sqlite_url_is_a_clear_error() -> None:
    with pytest.raises(UnavailableError, match=r"sqlite:///path/to/store\.db"):
        Store("sqlite:relative.db")


def test_a_current_postgres_store_runs_without_sqlalchemy(pg_url: str) -> None:
    """Only a due migration loads SQLAlchemy: a store already at the head revision reads and
    writes through psycopg alone (a child process, so this test's own imports do not count)."""
    import subprocess
    import sys

    migrated = Store(pg_url)
    migrated.migrate()
    migrated.close()
    code = (
        "import sys\n"
        "from agent.store.db import Store\n"
        "s = Store(sys.argv[1])\n"
        "assert s.migrate() is False\n"
        f"s.write_sync(lambda c: c.execute({PUT!r}, ('k', 'v')))\n"
        f"assert s.read_sync(lambda c: c.execute({GET!r}, ('k',)).one().value) == 'v'\n"
        "s.check()\n"
        "s.close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, pg_url], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
