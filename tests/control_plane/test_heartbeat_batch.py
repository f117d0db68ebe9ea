"""Heartbeats written in batches (``HeartbeatBatcher``), on SQLite and PostgreSQL: each
connection learns from its batch whether it is still current (replaced, revoked)."""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa

from common import uplink
from common.pki import make_csr
from control_plane import schema as t
from control_plane.services.presence import VaultRef
from tests.control_plane.conftest import Api
from tests.control_plane.test_vaults import enroll_token, register


async def _vault(api: Api, owner: str, name: str) -> VaultRef:
    _, ident = await register(api, await enroll_token(api, owner), make_csr(name)[0], name)
    q = sa.select(t.vaults.c.org_id).where(t.vaults.c.id == ident["vault_id"])
    async with api.cp.engine.connect() as conn:
        org_id = (await conn.execute(q)).scalar_one()
    return VaultRef(ident["vault_id"], org_id, name)


async def _health(api: Api, vault_id: str) -> dict[str, object]:
    q = sa.select(t.vaults.c.health).where(t.vaults.c.id == vault_id)
    async with api.cp.engine.connect() as conn:
        return dict(json.loads((await conn.execute(q)).scalar_one()))


async def test_one_batch_tells_each_connection_whether_it_counted(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    a, b, c = [await _vault(api, owner, f"vault-{i}") for i in range(3)]
    presence = api.cp.presence
    old_a = (await presence.connect(a, "0.1.0")).gen
    new_a = (await presence.connect(a, "0.1.0")).gen  # replaces old_a
    gen_b = (await presence.connect(b, "0.1.0")).gen
    gen_c = (await presence.connect(c, "0.1.0")).gen
    status, _ = await api.call("POST", f"/vaults/{c.id}/revoke", owner)
    assert status == 200

    writes = 0
    write = presence.heartbeats._write

    async def counted(batch: list) -> set:  # type: ignore[type-arg]
        nonlocal writes
        writes += 1
        return await write(batch)

    presence.heartbeats._write = counted  # type: ignore[method-assign]
    results = await asyncio.gather(
        presence.heartbeat(a.id, old_a, {"n": "old"}),
        presence.heartbeat(a.id, new_a, {"n": 1}),
        presence.heartbeat(b.id, gen_b, {"n": 1}),
        presence.heartbeat(b.id, gen_b, {"n": 2}),  # the same connection again: newest wins
        presence.heartbeat(c.id, gen_c, {"n": 1}),
    )
    assert results == [False, True, True, True, False]
    assert writes == 1  # all five queued while nothing was being written: one batch
    assert await _health(api, a.id) == {"n": 1}
    assert await _health(api, b.id) == {"n": 2}
    assert await presence.why_stale(a.id) == "replaced"
    assert await presence.why_stale(c.id) == uplink.ERR_REVOKED

    # heartbeats arriving while a batch is being written go out together in the next one
    first = asyncio.ensure_future(presence.heartbeat(a.id, new_a, {"n": 2}))
    await asyncio.sleep(0)
    more = [presence.heartbeat(b.id, gen_b, {"n": k}) for k in (3, 4, 5)]
    assert await asyncio.gather(first, *more) == [True] * 4
    assert writes == 3
    assert await _health(api, b.id) == {"n": 5}


async def test_a_failed_batch_fails_its_heartbeats_and_the_next_one_works(api: Api) -> None:
    owner = await api.org("Acme", "owner@acme.test")
    a = await _vault(api, owner, "vault-a")
    gen = (await api.cp.presence.connect(a, "0.1.0")).gen
    batcher = api.cp.presence.heartbeats
    write = batcher._write

    async def broken(batch: list) -> set:  # type: ignore[type-arg]
        raise OSError("database down")

    batcher._write = broken  # type: ignore[method-assign]
    results = await asyncio.gather(api.cp.presence.heartbeat(a.id, gen, {}), return_exceptions=True)
    assert isinstance(results[0], OSError)
    batcher._write = write  # type: ignore[method-assign]
    assert await api.cp.presence.heartbeat(a.id, gen, {"ok": True})
    assert await _health(api, a.id) == {"ok": True}
