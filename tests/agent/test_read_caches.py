"""The read path's caches (docs/performance.md, issue 18): what they hold, their bounds, and that
every write path invalidates them.

* DEK cache (``agent.crypto.Envelope``): unwrapped DEKs as AES-GCM objects, keyed by the exact
  sealed row; dropped on update, generated rotation, the rotation engine, delete, destroy, KEK
  rotation and rekey; never a plaintext value; bounded. Another replica on a shared PostgreSQL
  store never gets a stale value.
* Policy decisions (``agent.auth.Policy``): memoised per immutable policy object, bounded; a
  revoked token is refused however warm the memo.
* Read-response heads (``agent.api.secret_views.ReadPrefixes``): byte-identical to encoding the
  whole body, never reused for changed metadata.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent import crypto
from agent.api.secret_views import ReadPrefixes
from agent.assembly import Agent, key_source
from agent.auth import MEMO_NAME, POLICY_MEMO, Policy
from agent.crypto import Envelope, KeySource, MasterKey, SealedValue, SecretBytes
from agent.generate import GeneratorSpec
from agent.keys import KeyManager
from agent.rotation.engine import RotationEngine
from agent.secrets import SecretMeta, SecretService
from agent.settings import load_agent_settings
from agent.store.db import Store
from agent.uplink import meta as uplink_meta
from common.errors import IntegrityError, NotFoundError
from tests.agent.conftest import Api
from tests.conftest import init_agent_dir

VALUE = "v" * 1000


@pytest.fixture
async def agent(tmp_path: Path, storage_url: str | None) -> AsyncIterator[Agent]:
    """A real agent (store, keys, secrets, rotation engine) on each backend."""
    folder = init_agent_dir(tmp_path / "agent", storage_url=storage_url)
    settings = load_agent_settings(None, folder.path, rotation={"jitter_fraction": 0})
    a = await asyncio.to_thread(Agent.open, settings)
    try:
        yield a
    finally:
        await asyncio.to_thread(a.close)


def cached(agent: Agent, sid: str) -> list[tuple[int, int, bytes]]:
    """The (version, KEK version, wrapped DEK) entries the DEK cache holds for ``sid``."""
    return agent.keys.envelope.cached_deks().get(sid, [])


def no_plaintext_in(envelope: Envelope, plaintext: bytes) -> None:
    """The DEK cache holds AES-GCM objects and row keys, nothing that is or contains a value."""
    for sid, found in envelope._deks.items():
        assert plaintext not in sid.encode()
        for (version, kek, wrapped), aead in found.items():
            assert isinstance(version, int) and isinstance(kek, int)
            assert plaintext not in wrapped
            assert type(aead) is AESGCM


# --------------------------------------------------------------------------- DEK cache


def test_dek_cache_is_a_bounded_lru(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto, "DEK_CACHE_SECRETS", 8)
    monkeypatch.setattr(crypto, "DEK_CACHE_VERSIONS", 2)
    env = Envelope("vlt_test", MasterKey(SecretBytes(bytes(32))))
    env.load_kek(1, env.new_kek(1))
    sealed = {f"sec_{i}": env.seal(f"sec_{i}", 1, f"value {i}".encode(), 1) for i in range(20)}
    for sid, s in sealed.items():
        assert env.open(sid, 1, s) == f"value {sid[4:]}".encode()
        env.open("sec_0", 1, sealed["sec_0"])  # the hot one stays: least recently used goes
    held = env.cached_deks()
    assert len(held) == 8 and "sec_0" in held and "sec_19" in held and "sec_1" not in held
    versions = [env.seal("sec_0", v, b"x", 1) for v in range(2, 6)]
    for v, s in enumerate(versions, start=2):
        env.open("sec_0", v, s)
    assert len(env.cached_deks()["sec_0"]) <= 2  # versions per secret are bounded too
    no_plaintext_in(env, b"value")


def test_dek_cache_keyed_by_the_exact_row_never_serves_a_changed_one() -> None:
    env = Envelope("vlt_test", MasterKey(SecretBytes(bytes(32))))
    env.load_kek(1, env.new_kek(1))
    a = env.seal("sec_a", 1, b"first", 1)
    assert env.open("sec_a", 1, a) == b"first"
    b = env.seal("sec_a", 1, b"second", 1)  # same id and version, another DEK (a racing writer)
    assert env.open("sec_a", 1, b) == b"second"
    forged = SealedValue(1, a.wrapped_dek, b.ciphertext)  # cached DEK, other ciphertext
    with pytest.raises(IntegrityError):
        env.open("sec_a", 1, forged)
    with pytest.raises(IntegrityError):  # the cached DEK is bound to its secret and version
        env.open("sec_b", 1, a)


async def test_every_secret_write_drops_its_cached_deks(agent: Agent) -> None:
    s = agent.secrets
    meta = await s.create("db/password", VALUE)
    other = await s.create("db/other", "other value")
    await s.reveal(meta.id)
    await s.reveal(other.id)
    assert [v for v, _k, _w in cached(agent, meta.id)] == [1]
    no_plaintext_in(agent.keys.envelope, VALUE.encode())

    await s.update(meta.id, value="second")
    assert cached(agent, meta.id) == [] and cached(agent, other.id) != []
    assert (await s.reveal(meta.id))[1:] == (2, "second")
    await s.update(meta.id, description="metadata only")
    assert cached(agent, meta.id) == []
    assert (await s.reveal(meta.id))[1:] == (2, "second")

    await s.rotate(meta.id, GeneratorSpec(length=20))
    assert cached(agent, meta.id) == []
    _, served, value = await s.reveal(meta.id)
    assert served == 3 and len(value) == 20
    assert (await s.reveal(meta.id, 1))[2] == VALUE  # older versions stay readable

    await s.delete(meta.id)
    assert cached(agent, meta.id) == []
    with pytest.raises(NotFoundError):
        await s.reveal(meta.id)
    await s.undelete(meta.id)
    await s.reveal(meta.id)
    await s.delete(meta.id)
    await s.destroy(meta.id)
    assert cached(agent, meta.id) == [] and cached(agent, other.id) != []
    with pytest.raises(NotFoundError):
        await s.reveal(meta.id)


async def test_the_rotation_engine_drops_cached_deks(agent: Agent) -> None:
    policy = {"id": "pol_a", "name": "pol_a", "version": 1,
              "body": {"selector": {"name_glob": "**"}, "interval_seconds": 3600,
                       "notice_seconds": 60, "scope": {"all": True},
                       "rotator": {"type": "random", "settings": {"length": 24}}}}  # fmt: skip
    doc = {"version": "v1", "policies": [policy]}
    await agent.store.write(lambda c: uplink_meta.put(c, uplink_meta.POLICIES, doc))
    meta = await agent.secrets.create("db/pass", "old-value")
    await agent.secrets.reveal(meta.id)
    assert cached(agent, meta.id) != []
    engine = agent.rotation
    assert isinstance(engine, RotationEngine)
    governing = await engine.governing(meta)
    assert governing is not None
    await engine.rotate(meta.id, governing)
    assert cached(agent, meta.id) == []
    _, served, value = await agent.secrets.reveal(meta.id)
    assert served == 2 and len(value) == 24 and value != "old-value"


async def test_kek_rotation_drops_every_dek_of_the_destroyed_kek(agent: Agent) -> None:
    metas = [await agent.secrets.create(f"app/k{i}", f"value {i}") for i in range(5)]
    old = []
    for m in metas:
        await agent.secrets.reveal(m.id)
        old.append(await agent.store.read(agent.secrets._fetch(m.id, None)))
    assert {k for m in metas for _v, k, _w in cached(agent, m.id)} == {1}
    result = await agent.keys.rotate_kek()
    assert result.destroyed == [1]
    assert all(k != 1 for m in metas for _v, k, _w in cached(agent, m.id))
    for m, (_meta, ver, sealed) in zip(metas, old, strict=True):
        with pytest.raises(IntegrityError):  # was cached before: the KEK is gone, so is its DEK
            agent.keys.open(m.id, ver, sealed)
        assert (await agent.secrets.reveal(m.id))[2] == f"value {m.name[5:]}"


async def test_rekey_empties_the_dek_cache(agent: Agent) -> None:
    meta = await agent.secrets.create("db/password", VALUE)
    await agent.secrets.reveal(meta.id)
    assert agent.keys.envelope.cached_deks() != {}
    await agent.keys.rekey(KeySource("keyfile", SecretBytes(bytes(range(32)))), iterations=100_000)
    assert agent.keys.envelope.cached_deks() == {}
    assert (await agent.secrets.reveal(meta.id))[2] == VALUE


def _replica(settings: Any) -> tuple[Store, SecretService]:
    store = Store(settings.storage_url)
    keys = KeyManager.unlock(store, key_source(settings))
    return store, SecretService(store, keys, cache=False)  # how replicas share PostgreSQL


async def test_another_replica_on_shared_postgres_never_gets_a_stale_value(
    tmp_path: Path, pg_url: str
) -> None:
    folder = init_agent_dir(tmp_path / "agent", storage_url=pg_url)
    settings = load_agent_settings(None, folder.path)
    a_store, a = await asyncio.to_thread(_replica, settings)
    b_store, b = await asyncio.to_thread(_replica, settings)
    try:
        meta = await a.create("db/password", "one")
        assert (await a.reveal(meta.id))[1:] == (1, "one")
        assert a.keys.envelope.cached_deks()[meta.id] != []  # A's DEK cache is warm
        await b.update(meta.id, value="two")  # B writes; A hears nothing
        assert (await a.reveal(meta.id))[1:] == (2, "two")
        await b.rotate(meta.id, GeneratorSpec(length=16))
        _, served, value = await a.reveal(meta.id)
        assert served == 3 and len(value) == 16 and value == (await b.reveal(meta.id))[2]
        await b.delete(meta.id)
        with pytest.raises(NotFoundError):
            await a.reveal(meta.id)
        await b.destroy(meta.id)
        with pytest.raises(NotFoundError):
            await a.reveal(meta.id, 1)
    finally:
        await asyncio.to_thread(a_store.close)
        await asyncio.to_thread(b_store.close)


# --------------------------------------------------------------------------- policy decisions


def test_policy_memo_is_bounded_and_per_policy() -> None:
    reader = Policy.parse([{"path": "db/*", "capabilities": ["read"]}])
    writer = Policy.parse([{"path": "db/*", "capabilities": ["write"]}])
    assert reader.allows("read", "db/a") and not writer.allows("read", "db/a")
    assert reader == Policy.parse([{"path": "db/*", "capabilities": ["read"]}])  # memo not compared
    for i in range(POLICY_MEMO * 3):
        assert reader.allows("read", f"db/n{i}")
        assert not reader.allows("read", f"other/n{i}")
        assert reader.sees(f"db/s{i}") and not reader.sees(f"x/s{i}")
        assert len(reader._memo) <= POLICY_MEMO
    long = "db/" + "a" * MEMO_NAME
    assert reader.allows("read", long) and (("read", long) not in reader._memo)
    assert not reader.allows("write", "db/a") and reader.allows("read", "db/a")


async def test_a_revoked_token_is_refused_however_warm_its_policy_memo(api: Api) -> None:
    status, created = await api.call("POST", "/api/v1/secrets", json={"name": "db/a", "value": "x"})
    assert status == 201
    token = await api.token(("db/*", ["read"]))
    for _ in range(3):
        status, body = await api.call("GET", f"/api/v1/secrets/{created['id']}", token=token)
        assert status == 200 and body["value"] == "x"
    status, me = await api.call("GET", "/api/v1/sys/tokens", token=None)
    tid = next(t["id"] for t in me["tokens"] if t["name"] == "t")
    status, _ = await api.call("DELETE", f"/api/v1/sys/tokens/{tid}")
    assert status == 200
    status, body = await api.call("GET", f"/api/v1/secrets/{created['id']}", token=token)
    assert status == 401


# --------------------------------------------------------------------------- read-response heads


def test_read_body_is_what_json_dumps_gives_and_follows_metadata() -> None:
    bodies = ReadPrefixes()
    m1 = SecretMeta("sec_x", "db/p", 2, "one", {"k": "é"}, "t0", "t1", None)
    m2 = SecretMeta(
        "sec_x", "db/p", 2, "two", {"k": "é"}, "t0", "t1", None
    )  # same id, version, time

    def expected(m: SecretMeta, served: int, value: str) -> bytes:
        doc = m.to_json()
        doc.update(version=served, current_version=m.version, value=value)
        return json.dumps(doc).encode()

    for m, served, value in [(m1, 2, 'a"b\n\u2028'), (m1, 1, "old"), (m2, 2, "z"), (m1, 2, "q")]:
        assert bodies.body(m, served, value) == expected(m, served, value)
    assert b'a\\"b' not in bodies.body(m1, 2, "q")  # the value is encoded per request only
    assert all(b'a\\"b' not in head for _m, head in bodies._heads.values())
