"""The write path made cheaper for issue 18 (docs/performance.md, "writes at synchronous=NORMAL"):
each change keeps what a write stores and checks exactly as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.assembly import Agent
from agent.secrets import ID_RE
from agent.settings import load_agent_settings
from tests.conftest import init_agent_dir


@pytest.fixture
async def agent(tmp_path: Path, storage_url: str | None) -> AsyncIterator[Agent]:
    """A real agent on each backend."""
    folder = init_agent_dir(tmp_path / "agent", storage_url=storage_url)
    a = await asyncio.to_thread(Agent.open, load_agent_settings(None, folder.path))
    try:
        yield a
    finally:
        await asyncio.to_thread(a.close)


async def test_ids_made_later_sort_later_and_stay_random(agent: Agent) -> None:
    """An id is ``sec_`` + the creation time in order-preserving base32 + 80 random bits: ids
    sort by creation time (so creates append to the id indexes), two ids of the same
    millisecond still differ, and every id matches the id format the API accepts."""
    start = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    times = [start + timedelta(milliseconds=ms) for ms in (0, 1, 31, 32, 999, 10**6, 10**10)]
    ids = [agent.secrets.new_id(when) for when in times]
    assert all(ID_RE.fullmatch(i) for i in ids)
    assert ids == sorted(ids)
    same = {agent.secrets.new_id(start) for _ in range(200)}
    assert len(same) == 200
    assert len({i[4:13] for i in same}) == 1  # one time part (45 of its 48 bits), 200 random parts


async def test_created_secrets_get_ordered_ids(agent: Agent) -> None:
    metas = [await agent.secrets.create(f"app/s{i}", "value") for i in range(20)]
    ids = [m.id for m in metas]
    stamps = [i[4:13] for i in ids]  # two creates in one millisecond differ in the random part
    assert stamps == sorted(stamps)
    assert all(ID_RE.fullmatch(i) for i in ids)
    assert (await agent.secrets.reveal(ids[7]))[2] == "value"


def test_name_mac_memo_is_bounded_and_refuses_what_it_refused_before() -> None:
    """The memo of name-binding MACs gives the MAC recomputing gives, a renamed or re-MACed
    row is refused however warm it is, and it holds at most ``NAME_MACS`` pairs."""
    import os

    from agent.rowauth import NAME_MACS, RowAuth
    from common.errors import IntegrityError

    auth, other = RowAuth(os.urandom(32)), RowAuth(os.urandom(32))
    mac = auth.name_mac("sec_a", "db/x")
    assert mac == auth._compute_name_mac("sec_a", "db/x")
    auth.check_name("sec_a", "db/x", mac)
    for sid, name, bad in (
        ("sec_a", "db/y", mac),  # renamed behind the agent's back
        ("sec_b", "db/x", mac),  # the binding moved to another id
        ("sec_a", "db/x", other.name_mac("sec_a", "db/x")),  # a MAC under another key
        ("sec_a", "db/x", None),
    ):
        with pytest.raises(IntegrityError):
            auth.check_name(sid, name, bad)
    for i in range(NAME_MACS + 50):
        auth.name_mac(f"sec_{i}", "n")
    assert auth._name_macs.cache_info().currsize == NAME_MACS


async def test_a_renamed_row_is_refused_on_update_after_its_mac_was_remembered(
    agent: Agent,
) -> None:
    """Update reads the row inside its transaction and checks the name binding: a row renamed
    in the store after the agent remembered its MAC is refused and nothing is written."""

    from common.errors import IntegrityError

    meta = await agent.secrets.create("app/one", "v1")
    await agent.secrets.update(meta.id, value="v2")  # the binding's MAC is now remembered
    await agent.store.write(
        lambda c: c.execute("UPDATE kv_secrets SET name = 'app/two' WHERE id = ?", (meta.id,))
    )
    with pytest.raises(IntegrityError):
        await agent.secrets.update(meta.id, value="v3")
    version = await agent.store.read(
        lambda c: c.execute(
            "SELECT current_version FROM kv_secrets WHERE id = ?", (meta.id,)
        ).scalar_one()
    )
    assert version == 2


async def test_update_builds_the_new_row_from_the_stored_one(agent: Agent) -> None:
    """A value update keeps the stored labels and description; a metadata update changes only
    what it names; the store (not only the cache) holds each result."""

    meta = await agent.secrets.create("app/l", "v1", description="d", labels={"team": "a"})
    up = await agent.secrets.update(meta.id, value="v2")
    assert (up.version, up.labels, up.description) == (2, {"team": "a"}, "d")
    up = await agent.secrets.update(meta.id, labels={"team": "b", "env": "prod"})
    assert (up.version, up.labels, up.description) == (2, {"team": "b", "env": "prod"}, "d")
    up = await agent.secrets.update(meta.id, description="e", value="v3")
    assert (up.version, up.labels, up.description) == (3, {"team": "b", "env": "prod"}, "e")
    agent.secrets.forget_cached()
    stored = await agent.secrets.meta(meta.id)
    assert stored == up
    row = await agent.store.read(
        lambda c: c.execute(
            "SELECT labels, updated_at FROM kv_secrets WHERE id = ?", (meta.id,)
        ).one()
    )
    assert row.labels == '{"team": "b", "env": "prod"}' and row.updated_at == up.updated_at
    assert (await agent.secrets.reveal("app/l"))[1:] == (3, "v3")


@pytest.mark.parametrize(
    "name", ["db/prod/password", "", 'q"uote\\back\nline', "é\u2028\U0001f511", "\ud800"]
)
def test_name_mac_bytes_are_those_of_json_dumps(name: str) -> None:
    """The fast name-binding MAC is HMAC-SHA256 over exactly ``json.dumps([id, name])`` with
    compact separators, as stored rows' MACs were computed: for any string, and for a value
    that is not one (a tampered row) it falls back to json.dumps itself."""
    import hashlib
    import hmac
    import json
    import os

    from agent.rowauth import RowAuth, _derive

    row_key = os.urandom(32)
    auth = RowAuth(row_key)

    def reference(sid: object, nm: object) -> str:
        data = json.dumps([sid, nm], separators=(",", ":")).encode()
        return hmac.new(_derive(row_key, "name"), data, hashlib.sha256).hexdigest()

    assert auth.name_mac("sec_abc", name) == reference("sec_abc", name)
    assert auth._compute_name_mac("sec_abc", 7) == reference("sec_abc", 7)  # type: ignore[arg-type]
