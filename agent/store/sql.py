"""The agent store's own small connection interface: plain SQL text on a DB-API connection.

Every statement is written once, with ``?`` placeholders, and turned into ``%s`` for psycopg
(a literal ``%`` is doubled first). Values are always bound parameters; table and column names
come only from our own constants. Rows are tuples whose columns are also attributes, as the
callers used them under SQLAlchemy; :class:`Result` offers the handful of accessors they use.

No SQLAlchemy here: the running agent on SQLite never imports it (docs/architecture.md).
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

_ROW_CLASSES: dict[tuple[str, ...], type] = {}
_FORMAT: dict[str, str] = {}  # ``?`` statement -> its ``%s`` form (psycopg)


class ResultError(LookupError):
    """A statement returned no row, or more than one, where exactly one was expected."""


def row_class(columns: tuple[str, ...]) -> type:
    """A tuple type whose fields are ``columns`` (cached: statements are our constants)."""
    cls = _ROW_CLASSES.get(columns)
    if cls is None:
        base = namedtuple("Row", columns, rename=True)  # type: ignore[misc]

        class Row(base):
            __slots__ = ()

            @property
            def _mapping(self) -> dict[str, Any]:
                return dict(zip(columns, self, strict=True))

        cls = _ROW_CLASSES[columns] = Row
    return cls


class Values(list[Any]):
    """A list with SQLAlchemy's ``all()``/``first()`` spelling (for ``scalars()``, ``mappings()``)."""

    def all(self) -> list[Any]:
        return list(self)

    def first(self) -> Any:
        return self[0] if self else None


class Result:
    """The outcome of one statement: its rows (fetched on demand) and ``rowcount``."""

    __slots__ = ("_cursor", "rowcount")

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self.rowcount: int = cursor.rowcount

    # plain tuples, for the hot paths
    def fetchone(self) -> tuple[Any, ...] | None:
        if self._cursor.description is None:
            return None
        row: tuple[Any, ...] | None = self._cursor.fetchone()
        return row

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self._cursor.description is None:
            return []
        rows: list[tuple[Any, ...]] = self._cursor.fetchall()
        return rows

    # rows with named columns
    def _cls(self) -> type:
        return row_class(tuple(d[0] for d in self._cursor.description))

    def all(self) -> list[Any]:
        rows = self.fetchall()
        if not rows:
            return []
        cls = self._cls()
        return [cls(*row) for row in rows]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.all())

    def first(self) -> Any:
        row = self.fetchone()
        return None if row is None else self._cls()(*row)

    def one_or_none(self) -> Any:
        rows = self.all()
        if len(rows) > 1:
            raise ResultError("the statement returned more than one row")
        return rows[0] if rows else None

    def one(self) -> Any:
        row = self.one_or_none()
        if row is None:
            raise ResultError("the statement returned no row")
        return row

    def mappings(self) -> Values:
        rows = self.fetchall()
        if not rows:
            return Values()
        names = [d[0] for d in self._cursor.description]
        return Values(dict(zip(names, row, strict=True)) for row in rows)

    # the first column
    def scalars(self) -> Values:
        return Values(row[0] for row in self.fetchall())

    def scalar(self) -> Any:
        row = self.fetchone()
        return None if row is None else row[0]

    def scalar_one_or_none(self) -> Any:
        rows = self.fetchall()
        if len(rows) > 1:
            raise ResultError("the statement returned more than one row")
        return rows[0][0] if rows else None

    def scalar_one(self) -> Any:
        rows = self.fetchall()
        if len(rows) != 1:
            raise ResultError(f"the statement returned {len(rows)} rows, not one")
        return rows[0][0]


class Connection:
    """One DB-API connection inside a transaction that the :class:`~agent.store.db.Store` runs.

    ``backend`` is ``"sqlite"`` or ``"postgresql"``; ``IntegrityError`` is the driver's
    constraint-violation exception class (a duplicate name, a foreign key); ``regexp`` the
    operator of a regular-expression search (SQLite's is :func:`regexp`, registered on every
    store connection)."""

    __slots__ = ("IntegrityError", "_qmark", "_raw", "backend", "regexp")

    def __init__(self, raw: Any, backend: str, integrity_error: type[Exception]) -> None:
        self._raw = raw
        self.backend = backend
        self.IntegrityError = integrity_error
        self._qmark = backend == "sqlite"
        # the operator of ``column <regexp> pattern`` (a search, as Python's re.search)
        self.regexp = "REGEXP" if self._qmark else "~"

    def __repr__(self) -> str:
        return f"Connection(backend={self.backend!r})"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement in the current transaction."""
        cursor = self._raw.cursor()
        cursor.execute(sql if self._qmark else _format(sql), params)
        return Result(cursor)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement once per parameter row; returns the rows it touched (if known)."""
        if not rows:
            return 0
        cursor = self._raw.cursor()
        cursor.executemany(sql if self._qmark else _format(sql), rows)
        return int(cursor.rowcount)


def _format(sql: str) -> str:
    """``sql`` with psycopg's ``%s`` placeholders (cached: statements are our constants)."""
    out = _FORMAT.get(sql)
    if out is None:
        if len(_FORMAT) > 1024:  # statements with IN lists of many lengths: stay bounded
            _FORMAT.clear()
        out = _FORMAT[sql] = sql.replace("%", "%%").replace("?", "%s")
    return out


def placeholders(count: int) -> str:
    """``?, ?, …`` for an ``IN (…)`` list of ``count`` values."""
    return ", ".join("?" * count)


def regexp(pattern: str | None, value: str | None) -> bool | None:
    """SQLite's ``value REGEXP pattern``: whether ``pattern`` is found in ``value`` (re.search)."""
    if pattern is None or value is None:
        return None
    return _compiled(pattern).search(value) is not None


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
