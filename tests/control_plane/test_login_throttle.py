"""Login throttling an attacker cannot turn against a victim, and a bounded password-hashing pool.

Every test runs embedded (in-process limiter) and in production (PostgreSQL + the limiter in
Redis). The control plane is told it sits behind a TLS proxy, so each request's source is the
``X-Forwarded-For`` address the test sets (the real code path of a proxied deployment).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from control_plane.app import build_app
from control_plane.settings import ControlPlaneSettings
from control_plane.views.context import CP
from tests.control_plane.conftest import PASSWORD, Api, Clock

VICTIM = "victim@acme.test"


def src(address: str) -> dict[str, str]:
    """Headers that make a request come from ``address`` (through the trusted proxy)."""
    return {"X-Forwarded-For": f"203.0.113.250, {address}"}  # the first entry is ignored


async def make_api(aiohttp_client: Any, settings: ControlPlaneSettings) -> Api:
    """The control plane in-process with these settings."""
    clock = Clock()
    app = build_app(settings, clock=clock)
    client = await aiohttp_client(app)
    return Api(client, app[CP], clock)


@pytest.fixture
async def proxied(
    aiohttp_client: Any, settings_factory: Callable[..., ControlPlaneSettings]
) -> AsyncIterator[Api]:
    """Behind a declared proxy; 3 free failures per pair, delays 1 s doubling to 4 s; 10
    failures per source per 3 s."""
    settings = settings_factory(
        tls_proxy=True,
        login_max_failures=3,
        login_delay_seconds=1,
        login_lockout_seconds=4,
        login_source_max_failures=10,
        login_source_window_seconds=3,
    )
    yield await make_api(aiohttp_client, settings)


async def attempt(api: Api, email: str, password: str, address: str) -> tuple[int, Any, float]:
    """One login: (status, body, Retry-After or 0)."""
    resp = await api.client.post(
        "/api/v1/auth/login", json={"email": email, "password": password}, headers=src(address)
    )
    body = await resp.json()
    return resp.status, body, float(resp.headers.get("Retry-After", 0))


async def test_attackers_failures_do_not_lock_the_victim_out(proxied: Api) -> None:
    await proxied.cp.accounts.create_org("Acme", VICTIM, PASSWORD)
    statuses: Counter[int] = Counter()
    for _ in range(50):
        status, body, _ = await attempt(proxied, VICTIM, "not the password", "198.51.100.7")
        statuses[status] += 1
        assert status in (401, 429), body
    assert statuses[429] >= 40  # the attacker is slowed right away
    started = time.perf_counter()
    status, body, _ = await attempt(proxied, VICTIM, PASSWORD, "192.0.2.10")
    assert status == 200, body
    assert time.perf_counter() - started < 1.0
    # the attacker's own pair still waits, even with the right password
    status, body, retry = await attempt(proxied, VICTIM, PASSWORD, "198.51.100.7")
    assert status == 429 and retry > 0 and body["error"]["code"] == "rate_limited"


async def test_delays_grow_per_account_and_source_up_to_the_cap(proxied: Api) -> None:
    await proxied.cp.accounts.create_org("Acme", VICTIM, PASSWORD)
    statuses: list[int] = []
    waits: list[float] = []
    while len(waits) < 4:
        status, _, retry = await attempt(proxied, VICTIM, "wrong password!!", "198.51.100.8")
        statuses.append(status)
        if retry:
            waits.append(retry)
            await asyncio.sleep(retry + 0.05)  # wait it out, then fail again
    # 3 free failures, then 1 s, 2 s, 4 s, 4 s (capped at login_lockout_seconds = 4)
    assert statuses[:3] == [401, 401, 429] and waits == [1, 2, 4, 4], (statuses, waits)


async def test_spraying_many_accounts_from_one_address_is_slowed_to_the_budget(
    proxied: Api,
) -> None:
    await proxied.cp.accounts.create_org("Acme", VICTIM, PASSWORD)
    hashed_before = proxied.cp.accounts.passwords.hashed
    outcomes: Counter[int] = Counter()
    retry_afters = []
    for i in range(100):
        status, _, retry = await attempt(
            proxied, f"user{i}@acme.test", "guess-guess", "198.51.100.9"
        )
        outcomes[status] += 1
        if status == 429:
            retry_afters.append(retry)
    assert outcomes == {401: 10, 429: 90}, outcomes  # 10 per 3 s window
    assert proxied.cp.accounts.passwords.hashed - hashed_before == 10  # refused ones hash nothing
    assert retry_afters and max(retry_afters) <= 4
    # another address is not affected; after the window the sprayer gets 10 more
    assert (await attempt(proxied, VICTIM, PASSWORD, "192.0.2.11"))[0] == 200
    await asyncio.sleep(max(retry_afters) + 0.1)
    status, _, _ = await attempt(proxied, "user0@acme.test", "guess-guess", "198.51.100.9")
    assert status == 401


async def test_unknown_invitation_tokens_are_refused_before_any_hashing(proxied: Api) -> None:
    owner = await proxied.org("Acme", "owner@acme.test")
    hashed = proxied.cp.accounts.passwords.hashed
    for i in range(8):
        resp = await proxied.client.post(
            "/api/v1/invitations/accept",
            json={"token": f"kvi_bogus{i}", "password": PASSWORD},
            headers=src("198.51.100.20"),
        )
        assert resp.status in (404, 429)
    assert proxied.cp.accounts.passwords.hashed == hashed
    # a real invitation still works from another address, and is hashed once
    status, inv = await proxied.call(
        "POST", "/invitations", owner, json={"email": "new@acme.test", "role": "viewer"}
    )
    assert status == 201
    resp = await proxied.client.post(
        "/api/v1/invitations/accept",
        json={"token": inv["token"], "password": PASSWORD},
        headers=src("192.0.2.12"),
    )
    assert resp.status == 201
    assert proxied.cp.accounts.passwords.hashed == hashed + 1


@pytest.fixture
async def realistic(
    aiohttp_client: Any, settings_factory: Callable[..., ControlPlaneSettings]
) -> AsyncIterator[Api]:
    """OWASP's minimum argon2id (19 MiB, 2 passes: ~0.1 s here), default pool and limits."""
    settings = settings_factory(
        tls_proxy=True,
        argon2_time_cost=2,
        argon2_memory_kib=19456,
        login_max_failures=5,
        login_source_max_failures=30,
    )
    yield await make_api(aiohttp_client, settings)


async def test_unknown_emails_cost_the_same_as_known_ones(realistic: Api) -> None:
    await realistic.cp.accounts.create_org("Acme", VICTIM, PASSWORD)

    async def timed(email: str, address: str) -> float:
        started = time.perf_counter()
        status, _, _ = await attempt(realistic, email, "wrong password!!", address)
        assert status == 401
        return time.perf_counter() - started

    known, unknown = [], []
    for i in range(4):  # alternate, from fresh addresses, so load drifts hit both alike
        known.append(await timed(VICTIM, f"198.51.100.{30 + i}"))
        unknown.append(await timed(f"nobody{i}@acme.test", f"198.51.100.{40 + i}"))
    k, u = statistics.median(known), statistics.median(unknown)
    assert u > 0.5 * k and k > 0.5 * u, (known, unknown)  # a hash each, not a lookup vs a hash
    assert realistic.cp.accounts.passwords.hashed >= 8


async def test_password_pool_is_bounded_fair_and_serves_trusted_callers_first() -> None:
    import threading

    from argon2 import PasswordHasher

    from control_plane.errors import RateLimitedError
    from control_plane.services.passwords import HashPoolBusyError, PasswordPool

    pool = PasswordPool(PasswordHasher(time_cost=1, memory_cost=64), workers=1, queue=2)
    gate = threading.Event()
    order: list[str] = []

    async def run(name: str, trusted: bool = False) -> str:
        def work() -> str:
            gate.wait(5)
            order.append(name)
            return name

        return await pool._run(work, trusted)

    first = asyncio.ensure_future(run("first"))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(run("stranger1"))
    third = asyncio.ensure_future(run("stranger2"))
    await asyncio.sleep(0.05)
    with pytest.raises(HashPoolBusyError) as full:  # 1 running + 2 waiting: full
        await run("refused")
    assert full.value.http_status == 503 and full.value.retry_after == 1
    trusted = asyncio.ensure_future(run("trusted", trusted=True))  # bumps stranger2
    await asyncio.sleep(0.05)
    gate.set()
    assert await trusted == "trusted" and await first == "first" and await second == "stranger1"
    with pytest.raises(HashPoolBusyError):
        await third
    assert order == ["first", "trusted", "stranger1"]
    # per_source = 2: a third attempt of one address at once is refused before any work
    with pool.attempt("198.51.100.1"), pool.attempt("198.51.100.1"):
        with pytest.raises(RateLimitedError):
            with pool.attempt("198.51.100.1"):
                pass
        with pool.attempt("192.0.2.1"):
            pass
    pool.close()


async def test_strangers_leave_one_worker_to_known_pairs() -> None:
    import threading

    from argon2 import PasswordHasher

    from control_plane.services.passwords import PasswordPool

    pool = PasswordPool(PasswordHasher(time_cost=1, memory_cost=64), workers=2, queue=4)
    gate = threading.Event()
    started: list[str] = []

    async def run(name: str, trusted: bool = False) -> None:
        def work() -> None:
            started.append(name)
            gate.wait(5)

        await pool._run(work, trusted)

    strangers = [asyncio.ensure_future(run(f"s{i}")) for i in range(3)]
    await asyncio.sleep(0.1)
    assert started == ["s0"]  # one worker for strangers, however many wait
    known = asyncio.ensure_future(run("known", trusted=True))
    await asyncio.sleep(0.1)
    assert started == ["s0", "known"]  # the kept worker starts a known pair at once
    gate.set()
    await asyncio.gather(known, *strangers)
    assert sorted(started) == ["known", "s0", "s1", "s2"]
    pool.close()
