"""Keys shared by several processes: ``workers: N`` on one SQLite file, or replicas on one
PostgreSQL store. Another process may rotate the KEKs, or change the master key, under this one.

* A value under a KEK this process never loaded is opened (the KEK is followed from the store).
* A write sealed under a KEK another process has since retired is refused in its own
  transaction and sealed again under the active one, so nothing is ever stored under a KEK a
  rotation is destroying.
* A rotation overtaken by a newer one (another process) stops and destroys nothing; the newer
  one finishes, and a process unlocked afresh opens every value.
* After a rekey elsewhere, this process says so (restart it) instead of wrapping anything under
  the old master key or reporting tampering.

Each test runs on both backends with two real stores over one database, as the processes do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.assembly import Agent, key_source
from agent.crypto import KeySource, SecretBytes
from agent.keys import KeyManager
from agent.secrets import SecretService
from agent.settings import AgentSettings, load_agent_settings
from agent.store.db import Store
from common.errors import ConflictError, UnavailableError
from tests.conftest import init_agent_dir

Replica = tuple[Store, SecretService]


@pytest.fixture
def settings(tmp_path: Path, storage_url: str | None) -> AgentSettings:
    folder = init_agent_dir(tmp_path / "agent", storage_url=storage_url)
    return load_agent_settings(None, folder.path)


@pytest.fixture
async def replicas(settings: AgentSettings) -> AsyncIterator[Callable[[], Any]]:
    """Open another process's view of the vault: its own store and keys, nothing cached."""
    opened: list[Store] = []

    async def open_one() -> SecretService:
        def build() -> SecretService:
            store = Store(settings.storage_url)
            opened.append(store)
            keys = KeyManager.unlock(store, key_source(settings))
            keys.shared_keys = True  # what Agent.open sets for workers and for PostgreSQL
            return SecretService(store, keys, cache=False)

        return await asyncio.to_thread(build)

    yield open_one
    for store in opened:
        await asyncio.to_thread(store.close)


def _kek_of(service: SecretService, secret_id: str) -> list[int]:
    def q(conn: Any) -> list[int]:
        sql = "SELECT kek_version FROM kv_versions WHERE secret_id = ? ORDER BY version"
        return [int(v) for v in conn.execute(sql, (secret_id,)).scalars()]

    return service.store.read_sync(q)


async def test_agent_open_shares_keys_on_postgresql_only(
    settings: AgentSettings, backend: str
) -> None:
    agent = await asyncio.to_thread(Agent.open, settings)
    try:
        assert agent.keys.shared_keys is (backend == "postgres")
    finally:
        await asyncio.to_thread(agent.close)


async def test_a_kek_rotated_elsewhere_is_followed_for_reads_and_writes(
    replicas: Callable[[], Any],
) -> None:
    a, b = await replicas(), await replicas()
    old = await b.create("before/rotation", "one")
    assert (await a.reveal(old.id))[2] == "one"
    assert b.keys.active_kek == 1
    done = await a.keys.rotate_kek()
    assert done.new_version == 2 and done.destroyed == [1]
    # B still believes KEK 1 is active: its write is refused in the transaction, then sealed
    # again under KEK 2 — never stored under the KEK the rotation destroyed
    made = await b.create("during/rotation", "two")
    assert b.keys.active_kek == 2 and _kek_of(b, made.id) == [2]
    await b.update(old.id, value="one, again")
    assert _kek_of(b, old.id) == [2, 2]
    # A value re-wrapped or written under a KEK B never loaded opens there, and A reads B's
    newer = await a.create("after/rotation", "three")
    assert (await b.reveal(newer.id))[2] == "three"
    assert (await a.reveal(made.id))[2] == "two"
    assert not b.keys.envelope.has_kek(1)  # the destroyed KEK is unloaded where followed


async def test_a_rotation_overtaken_by_another_stops_and_destroys_nothing(
    replicas: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = await replicas(), await replicas()
    names = [f"many/s{i:03d}" for i in range(450)]  # three re-wrap batches of 200
    made = await asyncio.gather(*(a.create(n, f"v-{n}") for n in names))
    first_batch_done, overtaken = asyncio.Event(), []
    read = a.store.read

    async def read_after_b(fn: Any) -> Any:
        """A's next read after its first batch waits for all of B's rotation (the worst case:
        everything A re-wrapped moves on again, and both KEKs A used are destroyed)."""
        if first_batch_done.is_set() and not overtaken:
            overtaken.append(await b.keys.rotate_kek())
        return await read(fn)

    monkeypatch.setattr(a.store, "read", read_after_b)

    def progress(done: int, _total: int) -> None:
        if done:
            first_batch_done.set()

    with pytest.raises(ConflictError, match="another key rotation started meanwhile"):
        await a.keys.rotate_kek(progress)
    won = overtaken[0]
    assert won.new_version == 3 and sorted(won.destroyed) == [1, 2]
    fresh = await replicas()
    live = [k for k in await fresh.keys.kek_status() if k["state"] != "destroyed"]
    assert live == [{**live[0], "version": 3, "state": "active", "values": len(names)}]
    values = await asyncio.gather(*(fresh.reveal(m.id) for m in made))
    assert [v[2] for v in values] == [f"v-{n}" for n in names]
    assert (await a.create("after/both", "ok")).version == 1  # A follows on its next write
    assert a.keys.active_kek == 3


async def test_a_rekey_elsewhere_is_named_and_never_mixed_with_the_old_master(
    replicas: Callable[[], Any],
) -> None:
    a, b = await replicas(), await replicas()
    kept = await b.create("before/rekey", "one")
    await a.keys.rekey(KeySource("keyfile", SecretBytes(bytes(range(32)))), iterations=100_000)
    assert (await b.reveal(kept.id))[2] == "one"  # its KEK is loaded: the old key still opens it
    with pytest.raises(UnavailableError, match=r"rekey.*restart"):
        await b.keys.rotate_kek()  # would wrap a new KEK under the replaced master key
    await a.keys.rotate_kek()
    newer = await a.create("after/rekey", "two")
    with pytest.raises(UnavailableError, match=r"rekey.*restart"):
        await b.reveal(newer.id)  # not an integrity failure: the key changed, say so
    with pytest.raises(UnavailableError, match=r"rekey.*restart"):
        await b.create("from/b", "three")
    assert b.keys.rotating is False
