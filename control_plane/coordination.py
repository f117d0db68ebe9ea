"""What replicas share besides the database: login throttling and the sweep lock.

Each has two implementations: Redis / PostgreSQL for production, in-process for embedded mode.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.errors import RateLimitedError

log = logging.getLogger("keyvault.control_plane.coordination")


def _subject(*parts: str) -> str:
    joined = "\x00".join(p.strip().lower() for p in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class ThrottlePolicy:
    """How failed logins are slowed down.

    * per (account, source): ``free_failures`` in a row cost nothing; each further one makes
      that pair wait ``base_delay`` doubling up to ``max_delay`` seconds. Another source is
      not affected, so an attacker cannot lock a victim out.
    * per source, across accounts: at most ``source_failures`` failed attempts per
      ``source_window`` seconds (spraying many accounts from one address).
    """

    free_failures: int = 5
    base_delay: float = 1.0
    max_delay: int = 300
    source_failures: int = 30
    source_window: int = 60

    def delay(self, failures: int) -> int:
        """Seconds to wait after ``failures`` failures in a row of one (account, source)."""
        if failures < self.free_failures:
            return 0
        return int(min(self.base_delay * 2 ** (failures - self.free_failures), self.max_delay))

    trusted_seconds: int = 30 * 86400

    @property
    def memory_seconds(self) -> int:
        """How long a pair's failure count is remembered after its last failure."""
        return max(self.max_delay * 4, self.source_window, 3600)


class LoginLimiter(ABC):
    """Slows failed logins per (account, source) and per source; see :class:`ThrottlePolicy`.

    ``admit`` runs before any password hashing and *reserves* one attempt of the source's
    budget (so a burst of concurrent requests cannot pass the check together); ``succeeded``
    gives it back, ``failed`` keeps it and counts the pair's failure.
    """

    def __init__(self, policy: ThrottlePolicy) -> None:
        self.policy = policy

    @abstractmethod
    async def admit(self, account: str, source: str) -> bool:
        """Raise RateLimitedError while this pair must wait or the source is over its budget;
        else True when this account logged in from this source before (a *trusted* pair)."""

    @abstractmethod
    async def failed(self, account: str, source: str) -> None:
        """Count a failure; raise RateLimitedError when the pair must now wait."""

    @abstractmethod
    async def succeeded(self, account: str, source: str) -> None:
        """Forget the pair's failures and return the source's reserved attempt."""

    def _source_limited(self, retry_after: float) -> RateLimitedError:
        return RateLimitedError(
            int(retry_after) + 1,
            "too many failed logins from your address; try again in "
            f"{int(retry_after) + 1} seconds",
        )


class MemoryLimiter(LoginLimiter):
    """In-process limiter for embedded mode (and the fallback while Redis is away)."""

    def __init__(self, policy: ThrottlePolicy) -> None:
        super().__init__(policy)
        self._pairs: dict[str, tuple[int, float, float]] = {}  # fails, wait until, last
        self._sources: dict[str, tuple[int, float]] = {}  # attempts, window ends
        self._trusted: dict[str, float] = {}  # pair -> until

    def _prune(self, now: float) -> None:
        if len(self._pairs) + len(self._sources) < 10_000:
            return
        keep = self.policy.memory_seconds
        self._pairs = {k: v for k, v in self._pairs.items() if now - v[2] < keep}
        self._sources = {k: v for k, v in self._sources.items() if v[1] > now}
        self._trusted = {k: v for k, v in self._trusted.items() if v > now}

    async def admit(self, account: str, source: str) -> bool:
        """See :meth:`LoginLimiter.admit`."""
        now = time.monotonic()
        self._prune(now)
        pair = _subject(account, source)
        _, until, _ = self._pairs.get(pair, (0, 0.0, now))
        if until > now:
            raise RateLimitedError(int(until - now) + 1)
        src = _subject(source)
        count, ends = self._sources.get(src, (0, now + self.policy.source_window))
        if ends <= now:
            count, ends = 0, now + self.policy.source_window
        self._sources[src] = (count + 1, ends)
        if count + 1 > self.policy.source_failures:
            raise self._source_limited(ends - now)
        return self._trusted.get(pair, 0.0) > now

    async def failed(self, account: str, source: str) -> None:
        """See :meth:`LoginLimiter.failed`."""
        now, pair = time.monotonic(), _subject(account, source)
        fails, _, last = self._pairs.get(pair, (0, 0.0, now))
        if now - last > self.policy.memory_seconds:
            fails = 0
        fails += 1
        wait = self.policy.delay(fails)
        self._pairs[pair] = (fails, now + wait, now)
        if wait:
            raise RateLimitedError(wait)

    async def succeeded(self, account: str, source: str) -> None:
        """See :meth:`LoginLimiter.succeeded`."""
        pair = _subject(account, source)
        self._pairs.pop(pair, None)
        self._trusted[pair] = time.monotonic() + self.policy.trusted_seconds
        src = _subject(source)
        count, ends = self._sources.get(src, (0, 0.0))
        if count > 0:
            self._sources[src] = (count - 1, ends)


_RETURN_ATTEMPT = """
if redis.call('exists', KEYS[1]) == 1 and tonumber(redis.call('get', KEYS[1])) > 0 then
  return redis.call('decr', KEYS[1])
end
return 0
"""


class RedisLimiter(LoginLimiter):
    """Limiter shared by every replica through Redis keys with TTLs.

    While Redis is unreachable each replica falls back to its own in-process limiter, so
    logins keep working and are still limited (per replica) instead of failing open or closed.
    """

    def __init__(self, redis: Redis, prefix: str, policy: ThrottlePolicy) -> None:
        super().__init__(policy)
        self._redis = redis
        self._prefix = f"{prefix}:login"
        self._fallback = MemoryLimiter(policy)

    def _degraded(self, exc: Exception) -> None:
        log.warning("rate limiter: redis unreachable (%s); limiting in process", type(exc).__name__)

    def _keys(self, account: str, source: str) -> tuple[str, str, str]:
        pair = f"{self._prefix}:pair:{_subject(account, source)}"
        return f"{pair}:n", f"{pair}:wait", f"{self._prefix}:src:{_subject(source)}"

    def _trusted_key(self, account: str, source: str) -> str:
        return f"{self._prefix}:pair:{_subject(account, source)}:ok"

    async def admit(self, account: str, source: str) -> bool:
        """See :meth:`LoginLimiter.admit`."""
        _, wait_key, src_key = self._keys(account, source)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.pttl(wait_key)
                pipe.incr(src_key)
                pipe.expire(src_key, self.policy.source_window, nx=True)
                pipe.pttl(src_key)
                pipe.exists(self._trusted_key(account, source))
                wait_ms, count, _, window_ms, trusted = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._degraded(exc)
            return await self._fallback.admit(account, source)
        if wait_ms and wait_ms > 0:
            raise RateLimitedError(int(wait_ms / 1000) + 1)
        if int(count) > self.policy.source_failures:
            raise self._source_limited(max(0, int(window_ms or 0)) / 1000)
        return bool(trusted)

    async def failed(self, account: str, source: str) -> None:
        """See :meth:`LoginLimiter.failed`."""
        fails_key, wait_key, _ = self._keys(account, source)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(fails_key)
                pipe.expire(fails_key, self.policy.memory_seconds)
                fails, _ = await pipe.execute()
            wait = self.policy.delay(int(fails))
            if wait:
                await self._redis.set(wait_key, "1", ex=wait)
        except (RedisError, OSError) as exc:
            self._degraded(exc)
            await self._fallback.failed(account, source)
            return
        if wait:
            raise RateLimitedError(wait)

    async def succeeded(self, account: str, source: str) -> None:
        """See :meth:`LoginLimiter.succeeded`."""
        await self._fallback.succeeded(account, source)
        fails_key, wait_key, src_key = self._keys(account, source)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(fails_key, wait_key)
                pipe.set(self._trusted_key(account, source), "1", ex=self.policy.trusted_seconds)
                pipe.eval(_RETURN_ATTEMPT, 1, src_key)  # only while the window lives
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._degraded(exc)


class SweepLock(ABC):
    """Lets one replica at a time run a periodic sweep."""

    @abstractmethod
    def hold(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Async context yielding True if this replica holds the lock named ``name``."""


class MemoryLock(SweepLock):
    """One process: an asyncio lock per name, never waited for."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        """See :meth:`SweepLock.hold`."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        if lock.locked():
            yield False
            return
        async with lock:
            yield True


class AdvisoryLock(SweepLock):
    """PostgreSQL session advisory lock (``pg_try_advisory_lock``) held on one connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        """See :meth:`SweepLock.hold`."""
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        async with self._engine.connect() as conn:
            got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
            await conn.commit()
            try:
                yield bool(got)
            finally:
                if got:
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    await conn.commit()
