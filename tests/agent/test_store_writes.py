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
