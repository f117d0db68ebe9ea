"""The store layer: migrations on both backends, and group commit's isolation of failures."""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

import pytest

from agent.store.db import Store
from agent.store.migrations import HEAD_REVISION
from common.errors import ConflictError

PUT = "INSERT INTO kv_meta (key, value) VALUES (?, ?)"


def test_head_revision_constant_matches_alembic() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("agent.store") / "migrations"))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrate_is_idempotent(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 's.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    store = Store(url)
    try:
        assert store.revision() is None
        store.migrate()
        assert store.revision() == HEAD_REVISION
        store.migrate()
        assert (
            store.read_sync(lambda c: c.execute("SELECT count(*) FROM kv_secrets").scalar_one())
            == 0
        )
    finally:
        store.close()


async def test_group_commit_isolates_a_failing_write(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()

    def put(key: str):
        def txn(conn):
            conn.execute(PUT, (key, "v"))
            return key

        return txn

    def clash(conn):
        conn.execute(PUT, ("clash", "must be rolled back"))
        raise ConflictError("refused on purpose")

    try:
        jobs = [store.write(put(f"k-{i}")) for i in range(25)]
        jobs += [store.write(clash)] + [store.write(put(f"k-{i}")) for i in range(25, 50)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert isinstance(results[25], ConflictError)
        assert [r for i, r in enumerate(results) if i != 25] == [f"k-{i}" for i in range(50)]
        count = await store.read(lambda c: c.execute("SELECT count(*) FROM kv_meta").scalar_one())
        assert count == 50
    finally:
        store.close()


async def test_the_writer_replaces_its_connection_after_a_driver_error(tmp_path: Path) -> None:
    """The SQLite writer keeps one connection; a statement the driver rejects gets its caller a
    clear error and the next write a fresh connection, while a refusal of the service's own
    (a KeyVaultError such as a conflict) keeps it."""

    from common.errors import UnavailableError

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    try:
        await store.write(lambda c: c.execute(PUT, ("a", "v")))
        first = store._held
        assert first is not None

        def refuse(conn):
            raise ConflictError("already there")

        with pytest.raises(ConflictError):
            await store.write(refuse)
        assert store._held is first

        with pytest.raises(UnavailableError, match="cannot be written"):
            await store.write(lambda c: c.execute("SELECT * FROM no_such_table"))
        assert store._held is None or store._held is not first
        await store.write(lambda c: c.execute(PUT, ("b", "v")))
        keys = store.read_sync(lambda c: sorted(c.execute("SELECT key FROM kv_meta").scalars()))
        assert {"a", "b"} <= set(keys)
    finally:
        store.close()


async def test_writes_of_one_loop_iteration_reach_the_writer_together(tmp_path: Path) -> None:
    """The writes a loop submits while running its ready tasks are handed to the writer in one
    piece, once they have all run: one group commit for all of them, each caller answered."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    sizes: list[int] = []
    commit = store._commit_batch

    def record(batch):
        sizes.append(len(batch))
        commit(batch)

    store._commit_batch = record  # type: ignore[method-assign]

    def put(key: str):
        return lambda c: c.execute(PUT, (key, "v")) and key

    try:
        keys = await asyncio.gather(*(store.write(put(f"k-{i}")) for i in range(40)))
        assert keys == [f"k-{i}" for i in range(40)]
        assert sizes == [40]
        assert await asyncio.to_thread(store.write_sync, put("sync")) == "sync"
    finally:
        store.close()


async def test_a_write_handed_over_after_close_is_refused_not_lost(tmp_path: Path) -> None:
    """A write submitted just before close() and handed over after it gets a clear error."""
    from common.errors import UnavailableError

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    pending = asyncio.ensure_future(store.write(lambda c: c.execute(PUT, ("late", "v"))))
    await asyncio.sleep(0)  # submitted; its hand-over runs in the next loop iteration
    assert store._submitted
    store.close()
    with pytest.raises(UnavailableError, match="closed"):
        await asyncio.wait_for(pending, 5)
    with pytest.raises(UnavailableError, match="closed"):
        store.write_sync(lambda c: None)
