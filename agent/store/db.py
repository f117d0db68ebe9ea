"""The agent store: plain SQL on DB-API connections driven from dedicated threads.

Reads run on a small thread pool. Writes go to one writer thread that *group-commits*: every
write waiting when a transaction starts joins it (a failing write is replayed alone, so it
does not sink the others), and each caller is answered only after the commit. An
acknowledged write is therefore durable, and concurrent writers share the cost of one commit.

The writes an event loop submits while it runs its ready tasks are handed to the writer
together, once the loop has run them all (one wake-up per loop iteration, not one per write):
the writer then runs its batch while the loop waits for it, instead of the two threads passing
the GIL back and forth on every system call while both are busy (docs/performance.md).

Operations receive an :class:`agent.store.sql.Connection` (plain SQL text, ``?`` placeholders).
SQLite is driven through the standard library's ``sqlite3`` directly, in WAL mode with the
configured ``synchronous`` level: the writer thread holds one connection for its life and the
readers share a small pool. PostgreSQL is the second backend, on the same code, through psycopg 3
directly: small pools whose connections are pinged when taken, so a restarted server is
reconnected to. SQLAlchemy (with Alembic) is imported only when a migration is due.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from agent.store.migrations import HEAD_REVISION
from agent.store.sql import Connection, ResultError, regexp
from common.errors import KeyVaultError, UnavailableError
from common.eventloop import current_loop

T = TypeVar("T")
log = logging.getLogger("keyvault.agent.store")
MAX_BATCH = 256
SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


# pg_advisory_xact_lock key held while the agent store migrates (a fixed 63-bit number: the
# first 8 bytes of sha256("keyvault.agent.store.migrate"), top bit clear); never change it:
# agents of every version must agree on it
MIGRATION_LOCK_KEY = 0x37C4_4277_748B_1D8D


def hold_migration_lock(conn: Any) -> None:
    """Take the migration lock for the rest of this transaction (PostgreSQL; SQLite's write
    transactions are already exclusive). Also used by the key manager's one-time data step
    after migration 0004, so two replicas never adopt different row keys. ``conn`` is a
    store :class:`~agent.store.sql.Connection` or (during a migration) a SQLAlchemy one."""
    if isinstance(conn, Connection):
        if conn.backend == "postgresql":
            conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))
        return
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))


def _revision_in(conn: Any) -> str | None:
    """The schema revision seen by this SQLAlchemy connection (None before the first one)."""
    from sqlalchemy import inspect, text

    if not inspect(conn).has_table("alembic_version"):
        return None
    value: str | None = conn.execute(
        text("SELECT version_num FROM alembic_version")
    ).scalar_one_or_none()
    return value


@dataclass
class _Op:
    fn: Callable[[Connection], Any]
    loop: asyncio.AbstractEventLoop | None
    future: Any  # asyncio.Future or concurrent.futures.Future
    shared: bool = True  # whether other worker processes' caches must hear of this write


def _sqlite_file(url: str) -> str:
    """The database path of a ``sqlite:///path`` URL (``sqlite://`` alone: in memory)."""
    if url in ("sqlite://", "sqlite:///:memory:"):
        return ":memory:"
    if not url.startswith("sqlite:///"):
        raise UnavailableError(
            "a SQLite storage URL has the form sqlite:///path/to/store.db; "
            "fix storage.url in the agent's configuration"
        )
    return url.removeprefix("sqlite:///").split("?", 1)[0]


def sqlite_connect(path: str, synchronous: str) -> sqlite3.Connection:
    """A connection with the store's pragmas; transactions are begun explicitly."""
    if synchronous.upper() not in SQLITE_SYNCHRONOUS:
        raise UnavailableError(
            f"sqlite synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}, "
            f"not {synchronous!r}"
        )
    raw = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    try:
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute(f"PRAGMA synchronous={synchronous.upper()}")
        raw.execute("PRAGMA foreign_keys=ON")
        raw.execute("PRAGMA secure_delete=ON")  # a deleted row's bytes are zeroed, not left free
        raw.execute("PRAGMA busy_timeout=10000")
        raw.create_function("regexp", 2, regexp, deterministic=True)
    except BaseException:
        raw.close()
        raise
    return raw


class _Pool:
    """Up to ``size`` DB-API connections shared by threads. An idle one is taken if ``ready``
    says it still works (else it is closed and the next one tried), a new one made when none is
    idle; after use it goes back unless ``reusable`` says it is broken or mid-transaction, or
    the pool has closed meanwhile."""

    def __init__(
        self,
        size: int,
        connect: Callable[[], Any],
        *,
        ready: Callable[[Any], bool] = lambda raw: True,
        reusable: Callable[[Any], bool],
        busy: str,
    ) -> None:
        self._connect, self._ready, self._reusable, self._busy = connect, ready, reusable, busy
        self._idle: list[Any] = []
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def lease(self) -> Iterator[Any]:
        """A connection for the block, given back (or closed) when it ends."""
        if not self._slots.acquire(timeout=30):
            raise UnavailableError(self._busy)
        try:
            raw = self._checkout()
            try:
                yield raw
            finally:
                self._checkin(raw)
        finally:
            self._slots.release()

    def _checkout(self) -> Any:
        while True:
            with self._lock:
                raw = self._idle.pop() if self._idle else None
            if raw is None:
                return self._connect()
            if self._ready(raw):
                return raw
            _close_quietly(raw)

    def _checkin(self, raw: Any) -> None:
        if self._reusable(raw):
            with self._lock:
                if not self._closed:
                    self._idle.append(raw)
                    return
        _close_quietly(raw)

    def close(self) -> None:
        """Close the idle connections; those in use are closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for raw in idle:
            _close_quietly(raw)


def _sqlite_reusable(raw: sqlite3.Connection) -> bool:
    """Open and outside a transaction (a rollback that failed leaves one we cannot trust)."""
    try:
        return not raw.in_transaction
    except sqlite3.ProgrammingError:  # closed
        return False


class _SqliteBackend:
    """sqlite3 connections: the writer's own (held by the writer thread), a pool of readers."""

    name = "sqlite"

    def __init__(self, url: str, synchronous: str, readers: int) -> None:
        self.path = _sqlite_file(url)
        self.synchronous = synchronous
        self.errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        self._pool = _Pool(
            readers,
            self.connect,
            reusable=_sqlite_reusable,
            busy="the store's reader connections are all busy; try again",
        )

    def connect(self) -> sqlite3.Connection:
        return sqlite_connect(self.path, self.synchronous)

    def wrap(self, raw: sqlite3.Connection) -> Connection:
        return Connection(raw, "sqlite", sqlite3.IntegrityError)

    @contextmanager
    def reader(self) -> Iterator[Connection]:
        """A pooled reader connection in a read transaction (committed when ``fn`` returns)."""
        with self._pool.lease() as raw:
            try:
                raw.execute("BEGIN")
                yield self.wrap(raw)
                raw.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):
                    if raw.in_transaction:
                        raw.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._pool.close()


class _PgPool:
    """A few psycopg 3 connections, each pinged when it is taken (a server restart since its
    last use shows there, and a new connection replaces it) and dropped when it breaks."""

    def __init__(self, conninfo: str, size: int) -> None:
        import psycopg

        self._psycopg = psycopg
        self._pool = _Pool(
            size,
            lambda: psycopg.connect(conninfo),
            ready=self._ping,
            reusable=lambda raw: not (raw.closed or raw.broken),
            busy="the store's connections are all busy; try again",
        )

    def _ping(self, raw: Any) -> bool:
        """The pre-ping (an empty statement, as SQLAlchemy's)."""
        if raw.closed or raw.broken:
            return False
        try:
            raw.execute(";")
        except self._psycopg.Error:
            return False
        return True

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection in a transaction, committed when the block ends (rolled back if it
        raises; a connection whose rollback fails is closed, never reused)."""
        with self._pool.lease() as raw:
            try:
                yield Connection(raw, "postgresql", self._psycopg.IntegrityError)
                raw.commit()
            except BaseException:
                try:
                    raw.rollback()
                except Exception:
                    _close_quietly(raw)
                raise

    def close(self) -> None:
        self._pool.close()


def _close_quietly(raw: Any) -> None:
    with suppress(Exception):
        raw.close()


def libpq_url(url: str) -> str:
    """The libpq connection URI of a ``postgresql+psycopg://`` storage URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgresql"):
        raise UnavailableError(
            "a PostgreSQL storage URL has the form postgresql+psycopg://user@host:5432/database; "
            "fix storage.url in the agent's configuration"
        )
    return f"postgresql://{rest}"


class _PostgresBackend:
    """psycopg 3 directly (imported on this path only): a writer pool of one, a reader pool."""

    name = "postgresql"

    def __init__(self, url: str, readers: int) -> None:
        import psycopg

        self.errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        conninfo = libpq_url(url)
        self.writer = _PgPool(conninfo, 1)
        self.readers = _PgPool(conninfo, readers)

    def close(self) -> None:
        self.writer.close()
        self.readers.close()


class Store:
    """Database access for the agent, safe to call from the event loop."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", readers: int = 2) -> None:
        self.url = url
        self.backend = "sqlite" if url.startswith("sqlite") else "postgresql"
        self._sqlite: _SqliteBackend | None = None
        self._pg: _PostgresBackend | None = None
        self._errors: tuple[type[BaseException], ...]  # the driver's (and pool's) errors
        if self.backend == "sqlite":
            self._sqlite = _SqliteBackend(url, sqlite_synchronous, readers)
            self._errors = self._sqlite.errors
        else:
            self._pg = _PostgresBackend(url, readers)
            self._errors = self._pg.errors
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="kv-read")
        self._queue: queue.SimpleQueue[list[_Op] | None] = queue.SimpleQueue()
        # per event loop, the writes submitted since its last hand-over (see _hand_over)
        self._submitted: dict[asyncio.AbstractEventLoop, list[_Op]] = {}
        self._submit_lock = threading.Lock()  # nothing is queued after close()'s stop mark
        self._held: Connection | None = None  # the writer thread's own connection (SQLite)
        self._writer = threading.Thread(target=self._write_loop, name="kv-write", daemon=True)
        self._writer.start()
        self._closed = False
        # Called on the writer thread after a commit that changed shared state, before any
        # caller hears of it: worker processes use it to invalidate each other's caches.
        self.on_commit: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"Store(backend={self.backend!r})"

    # ------------------------------------------------------------------ lifecycle
    @contextmanager
    def migration_connection(self) -> Iterator[Any]:
        """A SQLAlchemy connection in a write transaction, for Alembic (imports SQLAlchemy).

        It is a connection of its own: on SQLite with the store's pragmas and ``BEGIN
        IMMEDIATE`` (the writer's transactions wait for it, and it for them); on PostgreSQL the
        migration first takes the advisory lock (:func:`hold_migration_lock`)."""
        from sqlalchemy import create_engine, event
        from sqlalchemy.pool import NullPool

        if self._pg is not None:
            engine = create_engine(self.url, poolclass=NullPool)
            try:
                with engine.begin() as conn:
                    yield conn
            finally:
                engine.dispose()
            return

        assert self._sqlite is not None
        backend = self._sqlite
        engine = create_engine(
            "sqlite://", creator=backend.connect, poolclass=NullPool
        )  # the URL only picks the dialect: the creator opens the store's file

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        try:
            with engine.begin() as conn:
                yield conn
        finally:
            engine.dispose()

    def migrate(self) -> bool:
        """Bring the schema to the newest Alembic revision; True when this call migrated it.

        One migration at a time per store: on PostgreSQL the transaction first takes the
        advisory lock :data:`MIGRATION_LOCK_KEY` (replicas of one agent starting together wait
        for the first, then find the schema current); SQLite's write transaction is
        ``BEGIN IMMEDIATE`` and its data folder is locked by the agent. Alembic (and with it
        SQLAlchemy) is loaded only when a migration is due.
        """
        if self.revision() == HEAD_REVISION:
            return False
        from alembic import command
        from alembic.config import Config
        from sqlalchemy.exc import SQLAlchemyError

        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("agent.store") / "migrations"))
        try:
            with self.migration_connection() as conn:
                hold_migration_lock(conn)
                before = _revision_in(conn)
                if before == HEAD_REVISION:
                    log.info("store schema already at %s (another agent migrated it)", before)
                    return False
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except (SQLAlchemyError, OSError, *self._errors) as exc:  # type: ignore[misc]
            raise UnavailableError(
                f"the store at {self.safe_url} cannot be migrated: {_short(exc)}"
            ) from exc
        log.info("store schema migrated from %s to %s", before or "empty", HEAD_REVISION)
        return True

    def revision(self) -> str | None:
        """The schema revision the store is at (None when it has no schema yet)."""
        try:
            with self._reading() as conn:
                value: str | None = conn.execute(
                    "SELECT version_num FROM alembic_version"
                ).scalar_one_or_none()
                return value
        except (ResultError, UnavailableError, *self._errors):  # type: ignore[misc]
            return None

    def check(self) -> None:
        """Open a connection once, with a clear error if the store cannot be reached."""
        try:
            with self._reading() as conn:
                conn.execute("SELECT 1")
        except self._errors as exc:
            raise UnavailableError(
                f"the store at {self.safe_url} cannot be opened: {_short(exc)}"
            ) from exc

    @property
    def safe_url(self) -> str:
        """The URL without a password, for messages."""
        return safe_url(self.url)

    def close(self) -> None:
        """Finish queued writes, then release every connection."""
        with self._submit_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._writer.join(timeout=10)
        self._readers.shutdown(wait=True)
        if self._sqlite is not None:
            self._sqlite.close()
        if self._pg is not None:
            self._pg.close()

    def scrub(self) -> None:
        """Push every committed page into the database file and empty the WAL (blocking).

        With ``secure_delete`` the pages of a destroyed secret are zeroed, but older copies of
        those pages stay in the write-ahead log until a checkpoint: after a destroy the log is
        checkpointed and truncated so no file of the store still holds the ciphertext.
        PostgreSQL keeps dead tuples until VACUUM reuses them; that is the database's business.
        """
        path = sqlite_path(self.url)
        if path is None:
            return
        conn = sqlite3.connect(path, timeout=10)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("could not checkpoint the store after a destroy: %s", exc)
        finally:
            conn.close()

    # ------------------------------------------------------------------ access
    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        if self._sqlite is not None:
            with self._sqlite.reader() as conn:
                yield conn
        else:
            assert self._pg is not None
            with self._pg.readers.transaction() as conn:
                yield conn

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a read transaction on a reader thread."""
        loop = current_loop()  # asyncio.get_running_loop() without its getpid() per call
        return await loop.run_in_executor(self._readers, self.read_sync, fn)

    def read_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a read transaction on the calling thread."""
        try:
            with self._reading() as conn:
                return fn(conn)
        except KeyVaultError:
            raise
        except self._errors as exc:
            raise UnavailableError(f"the store cannot be read: {_short(exc)}") from exc

    async def write(self, fn: Callable[[Connection], T], *, shared: bool = True) -> T:
        """Run ``fn(conn)`` in the next group commit; returns once it is durable.

        ``shared=False`` marks bookkeeping no other worker caches (audit checkpoints)."""
        if self._closed:
            raise UnavailableError("the store is closed; the agent is shutting down")
        loop = current_loop()
        fut: asyncio.Future[T] = loop.create_future()
        op = _Op(fn, loop, fut, shared)
        submitted = self._submitted.get(loop)
        if submitted is None:
            self._submitted[loop] = [op]
            loop.call_soon(self._hand_over, loop)  # after the tasks ready now have run
        else:
            submitted.append(op)
        return await fut

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give the writer every write ``loop`` submitted in this iteration, in one piece."""
        ops = self._submitted.pop(loop, [])
        for start in range(0, len(ops), MAX_BATCH):
            self._submit(ops[start : start + MAX_BATCH])

    def _submit(self, ops: list[_Op]) -> None:
        """Queue ``ops`` for the writer, or refuse them if the store has closed meanwhile."""
        with self._submit_lock:
            if not self._closed:
                self._queue.put(ops)
                return
        closed = UnavailableError("the store is closed; the agent is shutting down")
        _deliver(ops, [(False, closed)] * len(ops))

    def write_sync(self, fn: Callable[[Connection], T], *, shared: bool = True) -> T:
        """Run ``fn(conn)`` through the writer thread and wait (for tools without a loop)."""
        import concurrent.futures

        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._submit([_Op(fn, None, fut, shared)])
        return fut.result()

    # ------------------------------------------------------------------ writer thread
    def _write_loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = first
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch = batch + nxt
            self._commit_batch(batch)
        if self._held is not None:
            with suppress(Exception):
                self._held._raw.close()
            self._held = None

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A write transaction, committed when the block ends (rolled back if it raises).

        On SQLite the writer keeps one connection for the thread's life (a checkout per batch
        cost ~8 µs a write, see docs/performance.md) and begins ``BEGIN IMMEDIATE``; after a
        failure of the statement, commit or rollback the next batch gets a fresh connection.
        On PostgreSQL one is checked out per batch so the pool's pre-ping catches a restarted
        server."""
        if self._pg is not None:
            with self._pg.writer.transaction() as conn:
                yield conn
            return
        assert self._sqlite is not None
        if self._held is None:
            self._held = self._sqlite.wrap(self._sqlite.connect())
        held = self._held
        raw: sqlite3.Connection = held._raw
        try:
            raw.execute("BEGIN IMMEDIATE")
            try:
                yield held
            except BaseException:
                raw.execute("ROLLBACK")
                raise
            raw.execute("COMMIT")
        except KeyVaultError:
            raise  # an operation's own refusal (a conflict, a missing secret): the link is fine
        except BaseException:
            # a statement, the commit or the rollback failed: the next batch gets a fresh
            # connection, as a pool checkout would have given it
            self._held = None
            with suppress(Exception):
                raw.close()
            raise

    def _commit_batch(self, batch: list[_Op]) -> None:
        """Run a batch in one transaction; if any op fails, replay each op alone.

        Failures are rare (a duplicate name, a missing secret), so the common case pays for no
        savepoints at all; the replay gives a failing op its own error and the others their
        results, exactly as if each had run alone. Ops are pure functions of the connection,
        so running one twice is safe.
        """
        results = self._together(batch) if len(batch) > 1 else None
        if results is None:
            results = [self._alone(op) for op in batch]
        if self.on_commit is not None and any(
            ok and op.shared for op, (ok, _) in zip(batch, results, strict=True)
        ):
            self.on_commit()
        _deliver(batch, results)

    def _together(self, batch: list[_Op]) -> list[tuple[bool, Any]] | None:
        try:
            with self._transaction() as conn:
                return [(True, op.fn(conn)) for op in batch]
        except Exception:
            return None

    def _alone(self, op: _Op) -> tuple[bool, Any]:
        try:
            with self._transaction() as conn:
                return True, op.fn(conn)
        except KeyVaultError as exc:
            return False, exc
        except Exception as exc:  # the statement, the commit or the connection failed
            log.error("store write failed: %s", _short(exc))
            return False, UnavailableError(f"the store cannot be written: {_short(exc)}")


def _deliver(batch: list[_Op], results: list[tuple[bool, Any]]) -> None:
    """Answer every caller: one wake-up per event loop, not one per write."""
    by_loop: dict[asyncio.AbstractEventLoop | None, list[tuple[_Op, bool, Any]]] = {}
    for op, (ok, value) in zip(batch, results, strict=True):
        by_loop.setdefault(op.loop, []).append((op, ok, value))
    for loop, items in by_loop.items():
        if loop is None:
            _settle(items)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[tuple[_Op, bool, Any]]) -> None:
    for op, ok, value in items:
        if op.future.done():
            continue
        if ok:
            op.future.set_result(value)
        else:
            op.future.set_exception(value)


def _short(exc: BaseException) -> str:
    """A one-line description of a driver error without the SQL and parameters."""
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


def safe_url(url: str) -> str:
    """A storage URL with its password shown as ``***``, for messages."""
    return replace_password(url, "***")


def replace_password(url: str, password: str | None) -> str:
    """``url`` with its password replaced (None: removed); user, host, database and options
    are kept as written."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    secret = "" if password is None else f":{password}"
    return parts._replace(netloc=f"{user}{secret}@{hostport}").geturl()


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, if that is what it is."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(_sqlite_file(url))


def backup_sqlite(src: Path, dest: Path) -> int:
    """A consistent copy of a live SQLite database (online backup API); returns pages copied."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(dest)
    pages = 0

    def progress(_status: int, remaining: int, total: int) -> None:
        nonlocal pages
        pages = total - remaining

    try:
        source.backup(target, pages=1024, progress=progress)
        target.execute("PRAGMA integrity_check")
    finally:
        target.close()
        source.close()
    return pages
