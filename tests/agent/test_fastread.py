"""The hot read (agent/api/fastread.py) answers exactly as the full path, or hands over.

One agent, two real HTTP servers over it: ``full`` is the application alone, ``fast`` has the
hot read in front (as ``keyvault agent run`` serves). Every case is sent to both; the status,
the body and the audit entry must be the same. A spy on the hand-over says which path answered
on ``fast``: the hot read must answer the plain cached read itself, and must hand over
everything else (a miss, a refusal, a query, an encoded path, another method, another route).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from agent.api import fastread
from agent.api.app import build_app
from agent.assembly import Agent
from agent.settings import load_agent_settings
from serverkit.runner import EdgeRunner
from tests.conftest import init_agent_dir

VALUE = "s3cr3t-" + "v" * 300


@dataclass
class Pair:
    """The agent, a session, the two servers' base URLs and the hand-over spy's log."""

    agent: Agent
    session: aiohttp.ClientSession
    full: str
    fast: str
    admin: str
    handed_over: list[str] = field(default_factory=list)

    def last_audit(self) -> dict[str, Any]:
        """The newest audit entry, without the fields that differ by position and time."""
        lines = Path(self.agent.audit.log_path).read_bytes().splitlines()
        entry = json.loads(lines[-1])
        return {k: v for k, v in entry.items() if k not in ("seq", "prev", "mac", "time")}

    async def one(self, base: str, method: str, path: str, token: str | None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kw.pop("headers", {}))
        url = URL(base + path, encoded=True)  # sent as written: no requoting by the client
        async with self.session.request(method, url, headers=headers, **kw) as resp:
            body = await resp.read()
            return resp.status, body, dict(resp.headers)

    async def both(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> tuple[int, bytes, bool]:
        """The case on ``full`` then ``fast``; asserts they agree; returns (status, body, hot)
        where ``hot`` says the hot read answered it on ``fast`` (no hand-over)."""
        token = self.admin if token is None else token
        s1, b1, h1 = await self.one(self.full, method, path, token or None, **kw)
        a1 = self.last_audit()
        before = len(self.handed_over)
        s2, b2, h2 = await self.one(self.fast, method, path, token or None, **kw)
        a2 = self.last_audit()
        assert (s2, b2) == (s1, b1), (method, path)
        assert a2 == a1, (method, path)
        for name in ("Content-Type", "Cache-Control", "X-Content-Type-Options"):
            assert h2.get(name) == h1.get(name), name
        return s2, b2, len(self.handed_over) == before


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    folder = init_agent_dir(tmp_path / "agent")
    agent = Agent.open(load_agent_settings(None, folder.path))
    app = build_app(agent)
    handed_over: list[str] = []
    front = fastread.front(agent, app)
    assert front is not None  # SQLite: the agent caches secrets, so the hot read is in front

    def spying(slow: fastread.Handler) -> fastread.Handler:
        async def counted(request: web.BaseRequest) -> web.StreamResponse:
            handed_over.append(request.raw_path)
            return await slow(request)

        return front(counted)

    full = EdgeRunner(app, access_log=None)
    fast = EdgeRunner(app, front=spying, access_log=None)
    urls = []
    for runner in (full, fast):
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        urls.append(f"http://127.0.0.1:{port}")
    session = aiohttp.ClientSession()
    try:
        yield Pair(agent, session, urls[0], urls[1], folder.token, handed_over)
    finally:
        await session.close()
        await fast.cleanup()
        await full.cleanup()
        agent.close()


async def _create(p: Pair, name: str, value: str = VALUE) -> str:
    status, body, _ = await p.one(
        p.full, "POST", "/api/v1/secrets", p.admin, json={"name": name, "value": value}
    )
    assert status == 201, body
    return str(json.loads(body)["id"])


async def _token(p: Pair, rules: list[tuple[str, list[str]]], ttl: int | None = None) -> str:
    doc: dict[str, Any] = {
        "name": "reader",
        "policy": [{"path": g, "capabilities": c} for g, c in rules],
    }
    if ttl is not None:
        doc["ttl_seconds"] = ttl
    status, body, _ = await p.one(p.full, "POST", "/api/v1/sys/tokens", p.admin, json=doc)
    assert status == 201, body
    return str(json.loads(body)["token"])


async def test_a_cached_read_by_id_and_by_name_is_answered_by_the_hot_read(pair: Pair) -> None:
    sid = await _create(pair, "app/db.password")
    # by id; by name as clients send it (quote(name, safe=""): "/" is "%2F"), either case;
    # with any other escape the full path answers (the same bytes)
    for ref, hot_expected in (
        (sid, True),
        (quote("app/db.password", safe=""), True),
        ("app%2fdb.password", True),
        ("app%2Fdb%2Epassword", False),
        ("%61pp%2Fdb.password", False),
    ):
        status, body, hot = await pair.both("GET", f"/api/v1/secrets/{ref}")
        assert status == 200 and json.loads(body)["value"] == VALUE, ref
        assert hot == hot_expected, ref
    await _create(pair, "plain-name.v2")
    status, body, hot = await pair.both("GET", "/api/v1/secrets/plain-name.v2")
    assert status == 200 and hot
    entry = pair.last_audit()
    assert entry.pop("actor").startswith("tok_")
    assert entry == {
        "op": "secrets.read",
        "outcome": "ok",
        "status": 200,
        "target": json.loads(body)["id"],
        "remote": "127.0.0.1",
        "request_id": None,
    }


async def test_refusals_and_misses_are_handed_to_the_full_path(pair: Pair) -> None:
    sid = await _create(pair, "team/a")
    other = await _create(pair, "other/b")
    reader = await _token(pair, [("team/*", ["read"])])
    lister = await _token(pair, [("other/*", ["list"])])
    cases: list[tuple[str, str, str | None, int]] = [
        ("GET", f"/api/v1/secrets/{sid}", "", 401),  # no token
        ("GET", f"/api/v1/secrets/{sid}", "kvt_" + "x" * 43, 401),  # unknown token
        ("GET", f"/api/v1/secrets/{other}", reader, 404),  # no right at all: as missing
        ("GET", f"/api/v1/secrets/{other}", lister, 403),  # some right, not read
        ("GET", "/api/v1/secrets/other%2Fb", reader, 403),  # by name: 403
        ("GET", "/api/v1/secrets/sec_doesnotexist", None, 404),
        ("GET", "/api/v1/secrets/no-such-name", None, 404),
        ("GET", f"/api/v1/secrets/{sid}?version=1", None, 200),  # a query
        ("GET", f"/api/v1/secrets/{sid}?bogus=1", None, 400),
        ("GET", f"/api/v1/secrets/{sid}/", None, 404),
        ("GET", f"/api/v1/secrets/{sid}/versions", None, 200),
        ("GET", "/api/v1/secrets/..", None, 404),
        ("GET", "/api/v1/secrets/other%2Fb", reader, 403),
        ("GET", "/api/v1/secrets/team%2Fmissing", reader, 404),
        ("GET", "/api/v1/secrets/.%2Fteam%2Fa", None, 404),
        ("HEAD", f"/api/v1/secrets/{sid}", None, 405),
        ("DELETE", "/api/v1/secrets/" + "x" * 300, None, 404),
    ]
    for method, path, token, expected in cases:
        status, _, hot = await pair.both(method, path, token)
        assert status == expected, (method, path)
        assert not hot, (method, path)
    # the reader's own secret is hot once the token is cached
    status, _, hot = await pair.both("GET", f"/api/v1/secrets/{sid}", reader)
    assert status == 200 and hot


async def test_every_write_path_is_seen_at_once(pair: Pair) -> None:
    sid = await _create(pair, "rotating/x")
    assert (await pair.both("GET", f"/api/v1/secrets/{sid}"))[2]
    for change in (
        ("PUT", {"value": "second"}),
        ("POST-rotate", None),
        ("PUT", {"description": "only metadata"}),
    ):
        method, doc = change
        if method == "PUT":
            status, _, _ = await pair.one(
                pair.full, "PUT", f"/api/v1/secrets/{sid}", pair.admin, json=doc
            )
        else:
            status, _, _ = await pair.one(
                pair.full, "POST", f"/api/v1/secrets/{sid}/rotate", pair.admin
            )
        assert status == 200
        revealed = await pair.agent.secrets.reveal(sid)
        status, body, _ = await pair.both("GET", f"/api/v1/secrets/{sid}")
        got = json.loads(body)
        assert (got["value"], got["version"]) == (revealed[2], revealed[1])
    # deleted: 404 from both, and the full path says why
    assert (await pair.one(pair.full, "DELETE", f"/api/v1/secrets/{sid}", pair.admin))[0] == 200
    status, body, hot = await pair.both("GET", f"/api/v1/secrets/{sid}")
    assert status == 404 and not hot and b"deleted" in body


async def test_a_revoked_or_expired_token_is_refused_at_once(pair: Pair) -> None:
    sid = await _create(pair, "svc/key")
    token = await _token(pair, [("svc/*", ["read"])])
    assert (await pair.both("GET", f"/api/v1/secrets/{sid}", token))[2]
    tokens = json.loads((await pair.one(pair.full, "GET", "/api/v1/sys/tokens", pair.admin))[1])
    tid = next(t["id"] for t in tokens["tokens"] if t["name"] == "reader")
    status, *_ = await pair.one(pair.full, "DELETE", f"/api/v1/sys/tokens/{tid}", pair.admin)
    assert status == 200
    status, _, hot = await pair.both("GET", f"/api/v1/secrets/{sid}", token)
    assert status == 401 and not hot
    # expiry: the cached token's clock says it has expired
    short = await _token(pair, [("svc/*", ["read"])], ttl=60)
    assert (await pair.both("GET", f"/api/v1/secrets/{sid}", short))[2]
    later = datetime.now(UTC) + timedelta(seconds=120)
    pair.agent.tokens._clock = lambda: later
    status, _, hot = await pair.both("GET", f"/api/v1/secrets/{sid}", short)
    assert status == 401 and not hot


async def test_an_unwritable_audit_log_refuses_the_hot_read_without_the_value(pair: Pair) -> None:
    sid = await _create(pair, "audited/x")
    assert (await pair.both("GET", f"/api/v1/secrets/{sid}"))[2]
    log = pair.agent.audit
    writable = log._fd
    log._fd = os.open(log.log_path, os.O_RDONLY)  # a real EBADF on write(2)
    try:
        handed = len(pair.handed_over)
        status, body, _ = await pair.one(pair.fast, "GET", f"/api/v1/secrets/{sid}", pair.admin)
        assert status == 503 and VALUE.encode() not in body
        assert len(pair.handed_over) == handed  # refused by the hot read itself
        assert pair.agent.metrics.audit_failures >= 1
    finally:
        os.close(log._fd)
        log._fd = writable
    status, body, hot = await pair.both("GET", f"/api/v1/secrets/{sid}")
    assert status == 200 and hot


async def test_the_hot_read_is_not_put_in_front_of_a_postgresql_store(
    tmp_path: Path, pg_url: str
) -> None:
    folder = init_agent_dir(tmp_path / "agent", storage_url=pg_url)
    agent = await asyncio.to_thread(Agent.open, load_agent_settings(None, folder.path))
    try:
        assert fastread.front(agent, build_app(agent)) is None  # another replica may write
    finally:
        agent.close()


def test_plain_ref_takes_exactly_what_the_per_character_pattern_took() -> None:
    """``plain_ref`` (a character class, then the escapes) against the pattern it replaced, on
    every interesting short string and 20,000 random ones: the same yes/no, the same decoding."""
    import itertools
    import random
    import re

    oracle = re.compile(r"(?:[A-Za-z0-9_~-]|%2[Ff])(?:[A-Za-z0-9_.~-]|%2[Ff]){0,255}")
    prefix = fastread.PATH

    def old(path: str) -> str | None:
        if not oracle.fullmatch(path, len(prefix)):
            return None
        return path[len(prefix) :].replace("%2F", "/").replace("%2f", "/")

    alphabet = "a.%2Ff/_~-?#é"
    cases = ["".join(p) for n in range(1, 6) for p in itertools.product(alphabet, repeat=n)]
    rng = random.Random(18)
    pieces = ["a", "Z", "9", ".", "%2F", "%2f", "%2", "%", "%41", "/", "-", "_", "~", "é", " "]
    cases += ["".join(rng.choices(pieces, k=rng.randint(1, 300))) for _ in range(20_000)]
    cases += ["x" * 256, "x" * 257, "%2F" * 256, "%2F" * 257, "a" + "%2f" * 255, ""]
    for ref in cases:
        path = prefix + ref
        assert fastread.plain_ref(path, len(prefix)) == old(path), ref
