"""The test databases: a reused one is as empty as a new one (tests/conftest.py)."""

from __future__ import annotations

import psycopg

from tests.conftest import PG_ADMIN_URL, fresh_pg_database


def _url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _contents(name: str) -> list[tuple[str, str]]:
    with psycopg.connect(_url(name)) as conn:
        rows = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1, 2"
        ).fetchall()
        schemas = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT IN "
            "('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%'"
        ).fetchall()
    return [(str(a), str(b)) for a, b in rows] + [("schema", str(s)) for (s,) in schemas]


def test_a_reused_database_is_empty_and_its_sessions_are_gone() -> None:
    prefix = "kv_pooltest"
    with fresh_pg_database(prefix) as first:
        new = _contents(first)
        assert new == [("schema", "public")]
        leftover = psycopg.connect(_url(first), autocommit=True)  # a session the test forgot
        leftover.execute("CREATE TABLE t (id serial PRIMARY KEY, v text)")
        leftover.execute("INSERT INTO t (v) VALUES ('x')")
        leftover.execute("CREATE SCHEMA other")
        leftover.execute("CREATE TABLE other.u (id int)")
        leftover.execute("CREATE TYPE mood AS ENUM ('ok')")
    with fresh_pg_database(prefix) as second:
        assert second == first  # reused, not dropped and made again
        assert _contents(second) == new
        with psycopg.connect(_url(second)) as conn:
            owner = conn.execute(
                "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'"
            ).fetchone()
        assert owner == ("pg_database_owner",)
    assert leftover.closed or leftover.broken or _closed(leftover)


def _closed(conn: psycopg.Connection) -> bool:  # type: ignore[type-arg]
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False
