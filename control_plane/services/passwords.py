"""Password hashing (argon2id) on a small, bounded pool of threads.

argon2 is deliberately expensive (hundreds of milliseconds and tens of MiB each), so every
hash and verify of the replica runs on ``workers`` threads with at most ``queue`` more
waiting; beyond that a caller gets 503 with Retry-After at once instead of piling up memory
and delaying everyone. One source may have at most ``per_source`` attempts under way at once
(:meth:`PasswordPool.attempt`, entered before any lookup), so a single address cannot fill the
pool, the database or Redis in front of other people's logins, and an account logging
in from an address it used before waits ahead of strangers (it may even take the newest
stranger's place) and has a worker strangers may not use (with two or more workers), so a
flood from many addresses delays it by at most the one hash running in that worker.

Unknown accounts are verified against a dummy hash made with the same parameters, so a
wrong e-mail costs (and takes) as long as a wrong password.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from common.errors import UnavailableError
from control_plane.errors import RateLimitedError

T = TypeVar("T")


class HashPoolBusyError(RateLimitedError):
    """Every place of the hashing pool is taken: try again shortly (HTTP 503, Retry-After)."""

    code = "busy"
    http_status = 503


class PasswordPool:
    """argon2id hashing and verification on a bounded thread pool, fair between sources."""

    def __init__(
        self,
        hasher: PasswordHasher,
        *,
        workers: int = 2,
        queue: int = 8,
        per_source: int = 2,
    ) -> None:
        self.hasher = hasher
        self.workers = workers
        self.reserved = 1 if workers >= 2 else 0  # kept for known (account, address) pairs
        self.queue = queue
        self.per_source = per_source
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._dummy = hasher.hash(secrets.token_hex(16))
        self._running = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._by_source: Counter[str] = Counter()
        self.hashed = 0  # hashes and verifies run (for metrics and tests)
        self.refused = 0  # calls turned away because the pool or the source was full

    def _refuse_full(self) -> HashPoolBusyError:
        self.refused += 1
        return HashPoolBusyError(
            1, "the control plane is busy checking passwords; try again in a second"
        )

    @contextmanager
    def attempt(self, source: str) -> Iterator[None]:
        """One login-like attempt of ``source`` from before its first lookup to its end: a
        source may have ``per_source`` at once, the rest get 429 before touching anything."""
        if self._by_source[source] >= self.per_source:
            self.refused += 1
            raise RateLimitedError(1, "too many logins at once from your address; try again")
        self._by_source[source] += 1
        try:
            yield
        finally:
            self._by_source[source] -= 1
            if self._by_source[source] <= 0:
                del self._by_source[source]

    def _limit(self, priority: int) -> int:
        """Workers a caller of this priority may use: strangers leave one to known pairs."""
        return self.workers if priority == 0 else self.workers - self.reserved

    def _may_start(self, priority: int) -> bool:
        ahead = any(p <= priority for p, _, t in self._waiting if not t.done())
        return self._running < self._limit(priority) and not ahead

    async def _acquire(self, trusted: bool) -> None:
        """Take a worker, or wait in line (trusted callers first); refuse when full."""
        priority = 0 if trusted else 1
        if self._may_start(priority):
            self._running += 1
            return
        if len(self._waiting) >= self.queue:
            newest = max(self._waiting, default=None)
            if not trusted or newest is None or newest[0] == 0:
                raise self._refuse_full()
            self._waiting.remove(newest)  # a trusted caller bumps the newest stranger
            heapq.heapify(self._waiting)
            newest[2].set_exception(self._refuse_full())
        ticket = asyncio.get_running_loop().create_future()
        entry = (priority, next(self._order), ticket)
        heapq.heappush(self._waiting, entry)
        try:
            await ticket  # resolved by _release_worker, which counts us as running
        except BaseException:
            if entry in self._waiting:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            elif ticket.done() and not ticket.cancelled() and ticket.exception() is None:
                self._release_worker()  # handed over just as we gave up: pass it on
            raise

    def _release_worker(self) -> None:
        """A worker is free: start the best waiter that may use it."""
        self._running -= 1
        while self._waiting:
            priority, _, ticket = self._waiting[0]
            if ticket.done():
                heapq.heappop(self._waiting)
                continue
            if self._running >= self._limit(priority):
                return
            heapq.heappop(self._waiting)
            self._running += 1
            ticket.set_result(None)
            return

    async def _run(self, fn: Callable[[], T], trusted: bool = False) -> T:
        await self._acquire(trusted)
        try:
            self.hashed += 1
            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._executor, fn)
            except RuntimeError as exc:  # the pool was shut down under us
                raise UnavailableError("the control plane is shutting down") from exc
        finally:
            self._release_worker()

    async def hash(self, password: str) -> str:
        """The argon2id hash of a new password."""
        return await self._run(lambda: self.hasher.hash(password))

    async def verify(self, stored: str | None, password: str, *, trusted: bool = False) -> bool:
        """Whether ``password`` matches ``stored``; None (no such account) checks a dummy.

        ``trusted`` callers (an account logging in from an address it logged in from before)
        wait ahead of everyone else and may take the place of the newest stranger in line.
        """
        target = stored if stored is not None else self._dummy

        def check() -> bool:
            try:
                return bool(self.hasher.verify(target, password)) and stored is not None
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await self._run(check, trusted)

    def close(self) -> None:
        """Stop the threads (running hashes finish)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
