"""What replicas share besides the database: login rate limits and the sweep lock.

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

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.errors import RateLimitedError

log = logging.getLogger("keyvault.control_plane.coordination")


def _subject(key: str) -> str:
    return hashlib.sha256(key.strip().lower().encode("utf-8")).hexdigest()[:32]


class LoginLimiter(ABC):
    """Counts failed logins per account; after ``max_failures`` it locks the account out."""

    def __init__(self, max_failures: int, lockout_seconds: int) -> None:
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds

    @abstractmethod
    async def check(self, key: str) -> None:
        """Raise RateLimitedError while ``key`` is locked out."""

    @abstractmethod
    async def failed(self, key: str) -> None:
        """Count a failure; raise RateLimitedError if it locks the account."""

    @abstractmethod
    async def succeeded(self, key: str) -> None:
        """Forget the failures of ``key``."""


class MemoryLimiter(LoginLimiter):
    """In-process limiter for embedded mode."""

    def __init__(self, max_failures: int, lockout_seconds: int) -> None:
        super().__init__(max_failures, lockout_seconds)
        self._fails: dict[str, tuple[int, float]] = {}
        self._locked: dict[str, float] = {}

    async def check(self, key: str) -> None:
        """See :meth:`LoginLimiter.check`."""
        until = self._locked.get(_subject(key), 0.0)
        left = until - time.monotonic()
        if left > 0:
            raise RateLimitedError(int(left) + 1)

    async def failed(self, key: str) -> None:
        """See :meth:`LoginLimiter.failed`."""
        subject, now = _subject(key), time.monotonic()
        count, since = self._fails.get(subject, (0, now))
        if now - since > self.lockout_seconds:
            count, since = 0, now
        count += 1
        if count >= self.max_failures:
            self._fails.pop(subject, None)
            self._locked[subject] = now + self.lockout_seconds
            raise RateLimitedError(self.lockout_seconds)
        self._fails[subject] = (count, since)

    async def succeeded(self, key: str) -> None:
        """See :meth:`LoginLimiter.succeeded`."""
        self._fails.pop(_subject(key), None)


class RedisLimiter(LoginLimiter):
    """Limiter shared by every replica through Redis keys with TTLs.

    While Redis is unreachable each replica falls back to its own in-process limiter, so
    logins keep working and are still limited (per replica) instead of failing open or closed.
    """

    def __init__(self, redis: Redis, prefix: str, max_failures: int, lockout_seconds: int) -> None:
        super().__init__(max_failures, lockout_seconds)
        self._redis = redis
        self._prefix = f"{prefix}:login"
        self._fallback = MemoryLimiter(max_failures, lockout_seconds)

    def _degraded(self, exc: Exception) -> None:
        log.warning("rate limiter: redis unreachable (%s); limiting in process", type(exc).__name__)

    async def check(self, key: str) -> None:
        """See :meth:`LoginLimiter.check`."""
        await self._fallback.check(key)
        try:
            ttl = await self._redis.ttl(f"{self._prefix}:lock:{_subject(key)}")
        except (RedisError, OSError) as exc:
            self._degraded(exc)
            return
        if ttl and ttl > 0:
            raise RateLimitedError(ttl)

    async def failed(self, key: str) -> None:
        """See :meth:`LoginLimiter.failed`."""
        subject = _subject(key)
        fail_key = f"{self._prefix}:fail:{subject}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(fail_key)
                pipe.expire(fail_key, self.lockout_seconds, nx=True)
                count, _ = await pipe.execute()
            if int(count) < self.max_failures:
                return
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(f"{self._prefix}:lock:{subject}", "1", ex=self.lockout_seconds)
                pipe.delete(fail_key)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._degraded(exc)
            await self._fallback.failed(key)
            return
        raise RateLimitedError(self.lockout_seconds)

    async def succeeded(self, key: str) -> None:
        """See :meth:`LoginLimiter.succeeded`."""
        await self._fallback.succeeded(key)
        try:
            await self._redis.delete(f"{self._prefix}:fail:{_subject(key)}")
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
