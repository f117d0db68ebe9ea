"""The async SQLAlchemy engine (psycopg 3 or aiosqlite), migrations, and small row helpers."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Hashable, Iterable
from datetime import UTC, date, datetime
from importlib import resources
from typing import Any, Generic, TypeVar

from alembic import command
from alembic.config import Config
from psycopg import IntegrityError as DriverIntegrityError
from psycopg.rows import namedtuple_row
from sqlalchemy import Table, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from common.errors import UnavailableError

K = TypeVar("K", bound=Hashable)
A = TypeVar("A")
T = TypeVar("T")
V = TypeVar("V")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
# a unique or foreign-key violation, through SQLAlchemy or on the driver's connection (fetch)
DUPLICATE = (SAIntegrityError, DriverIntegrityError)


def new_id(prefix: str) -> str:
    """A random, URL-safe id such as ``vlt_…`` (26 base32 characters, 130 bits)."""
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(26))


_SORTED = "234567abcdefghijklmnopqrstuvwxyz"  # the same 32 symbols in ASCII order


def new_sorted_id(prefix: str, moment: datetime) -> str:
    """Like :func:`new_id`, but ids made later sort after earlier ones (to the millisecond).

    10 symbols of the time in milliseconds, then 16 random ones (80 bits).
    """
    ms = max(0, int(moment.timestamp() * 1000))
    head = "".join(_SORTED[(ms >> (5 * i)) & 31] for i in reversed(range(10)))
    return prefix + "_" + head + "".join(secrets.choice(_SORTED) for _ in range(16))


def utcnow() -> datetime:
    """Timezone-aware UTC now."""
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """A datetime read back from the database as aware UTC (SQLite returns naive ones)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(moment: datetime | date | None) -> str | None:
    """ISO 8601 text of a stored time (UTC, ``Z``), or None."""
    if moment is None:
        return None
    if isinstance(moment, datetime):
        value = aware(moment)
        assert value is not None
        return value.isoformat().replace("+00:00", "Z")
    return moment.isoformat()


def make_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: object) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # no pre-ping (it costs a round trip per checkout): SQLAlchemy invalidates the whole pool on
    # the first disconnect error, so after a PostgreSQL restart one operation fails and the
    # next ones reconnect (sweeps retry; tests/control_plane/test_outages.py).
    # Up to 30 connections, as before (10 + 20 overflow), but all of them stay open when
    # returned: under a burst (agents reconnecting after a restart) overflow connections were
    # closed on return and opened again a moment later, a TCP connect and PostgreSQL login
    # each time (~9 % of the replica's CPU while agents connected, docs/performance.md).
    # Connections are opened only when that many are in use at once.
    # Last in, first out: the connection just returned serves the next statement. Its
    # PostgreSQL backend is awake and hot (catalog caches filled, psycopg's statements prepared
    # after 5 uses), where the default rotation through all 30 handed every statement of a
    # quiet replica the backend idle longest: the session check took 1.9 ms, 0.23 in a tight
    # loop (docs/performance.md, "Issue 18, round 4").
    return create_async_engine(
        url, pool_size=30, max_overflow=0, pool_pre_ping=False, pool_use_lifo=True
    )


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for single statements that need no transaction around them (a lone SELECT,
    or one UPDATE that is atomic by itself): on PostgreSQL each runs in autocommit mode, one
    round trip instead of BEGIN + statement + COMMIT/ROLLBACK (the driver sends no ROLLBACK
    for a connection that is idle when it goes back to the pool). SQLite: ``engine`` itself."""
    if not is_postgres(engine):
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


_AUTOCOMMIT: weakref.WeakKeyDictionary[AsyncEngine, AsyncEngine] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def driver(engine: AsyncEngine) -> AsyncIterator[Any]:
    """PostgreSQL only: the psycopg connection of one of ``engine``'s pooled connections, in
    autocommit mode, for fixed statements on hot paths (an agent's connect sequence), where
    SQLAlchemy's per-statement machinery costs the process several times what psycopg does
    (``bench/db_statement.py``). A connection that fails or is interrupted mid-statement is
    invalidated, not returned to the pool."""
    single = _AUTOCOMMIT.get(engine)
    if single is None:  # an option engine is cheap to keep and costs a little to make
        single = _AUTOCOMMIT[engine] = autocommit(engine)
    async with single.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        try:
            yield raw
        except BaseException:
            await conn.invalidate()
            raise


async def fetch(
    engine: AsyncEngine, sql: str, params: tuple[Any, ...] | dict[str, Any]
) -> list[Any]:
    """PostgreSQL only: the rows (named tuples) of one statement run by :func:`driver`."""
    async with driver(engine) as raw:
        cur = raw.cursor(row_factory=namedtuple_row)
        await cur.execute(sql, params)
        return list(await cur.fetchall()) if cur.description is not None else []


async def fetch_grouped(
    engine: AsyncEngine, sql: str, keys: Iterable[str], field: str, make: Callable[[Any], T]
) -> dict[str, list[T]]:
    """PostgreSQL only: ``sql`` run once for all ``keys`` (its one parameter, an array), each
    row made by ``make`` and listed under its ``field`` (a key with no row gets ``[]``)."""
    found: dict[str, list[T]] = {key: [] for key in keys}
    for row in await fetch(engine, sql, (list(found),)):
        found[getattr(row, field)].append(make(row))
    return found


def is_postgres(engine: AsyncEngine) -> bool:
    """True for PostgreSQL, False for SQLite."""
    return engine.dialect.name == "postgresql"


def insert_for(engine: AsyncEngine, table: Table) -> Any:
    """The dialect's INSERT (with ``on_conflict_do_…``) for ``table``."""
    if is_postgres(engine):
        return postgresql.insert(table)
    return sqlite.insert(table)


def _upgrade(conn: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("control_plane") / "migrations"))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest Alembic revision."""
    try:
        async with engine.begin() as conn:
            if is_postgres(engine):
                # two replicas starting together must not migrate at the same time
                await conn.execute(text("SELECT pg_advisory_xact_lock(7263001)"))
            await conn.run_sync(_upgrade)
    except (SQLAlchemyError, OSError) as exc:
        raise UnavailableError(f"the database cannot be migrated: {exc}") from exc


async def ping(engine: AsyncEngine) -> None:
    """One round trip to the database, or UnavailableError."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        raise UnavailableError("the database is unreachable") from exc


class Batcher(Generic[K, A, V]):
    """Concurrent one-key statements of the same kind, run as one statement for many keys.

    ``run`` takes ``{key: argument}`` and returns ``{key: value}`` (a key it leaves out gets
    None). While one batch runs, the calls that arrive queue up, and then go together in the
    next one: no fixed delay, a lone call runs at once (natural group commit, like the
    heartbeats' ``HeartbeatBatcher``). Every call's statement therefore starts after the call
    was made. With ``share``, calls for a key already in the next batch share its answer (reads);
    without, such a call waits for a later batch (writes, one per call).
    """

    def __init__(
        self,
        run: Callable[[dict[K, A]], Awaitable[dict[K, V]]],
        spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]],
        name: str,
        *,
        share: bool,
    ) -> None:
        self._run, self._spawn, self._name, self._share = run, spawn, name, share
        self._queue: list[tuple[K, A, asyncio.Future[V | None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, key: K, arg: A) -> V | None:
        """Queue ``key`` (with ``arg``) and wait for its batch's answer (or its error)."""
        done: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_consume)
        self._queue.append((key, arg, done))
        if self._writer is None:
            self._writer = self._spawn(self._drain(), self._name)
        return await asyncio.shield(done)  # one caller's cancellation spares the others

    def _next(self) -> dict[K, tuple[A, list[asyncio.Future[V | None]]]]:
        batch: dict[K, tuple[A, list[asyncio.Future[V | None]]]] = {}
        later = []
        for key, arg, done in self._queue:
            if key not in batch:
                batch[key] = (arg, [done])
            elif self._share:
                batch[key][1].append(done)
            else:
                later.append((key, arg, done))
        self._queue = later
        return batch

    async def _drain(self) -> None:
        batch: dict[K, tuple[A, list[asyncio.Future[V | None]]]] = {}
        try:
            while self._queue:
                batch = self._next()
                try:
                    found = await self._run({key: arg for key, (arg, _) in batch.items()})
                except Exception as exc:
                    for _, waiters in batch.values():
                        for done in waiters:
                            if not done.done():
                                done.set_exception(exc)
                    continue
                for key, (_, waiters) in batch.items():
                    for done in waiters:
                        if not done.done():
                            done.set_result(found.get(key))
        finally:
            self._writer = None
            waiting = [d for _, ws in batch.values() for d in ws] + [q[2] for q in self._queue]
            for done in waiting:  # cancelled (shutdown): nobody waits forever
                done.cancel()
            self._queue = []


def _consume(done: asyncio.Future[Any]) -> None:
    """Mark a batch's error as seen even when its caller was cancelled meanwhile."""
    if not done.cancelled():
        done.exception()
