"""Secrets on the agent: create, read, update (new version), rotate, soft delete, undelete, destroy.

Values are sealed before they reach the store and opened only when a caller asks for one. The
current version of each secret is cached in memory *sealed* (never as plaintext) when the agent
owns its store alone, so a read is one AES-GCM unwrap and one decrypt with no database trip.

Once the agent is enrolled with a control plane, the :class:`~agent.changes.ChangeFeed` the
service is given tracks changes: every write also inserts an inventory change marker (the
secret's id, never its name) into the uplink's outbox, in the same transaction as the change
itself, and wakes the uplink's sender once it commits.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from time import perf_counter
from typing import Any

from agent.changes import ChangeEvent, ChangeFeed, SecretChange
from agent.crypto import Clock, Random, SealedValue, utcnow
from agent.generate import GeneratorSpec
from agent.keys import KeyManager
from agent.store import hot
from agent.store.db import Store
from agent.store.hot import SECRET_COLUMNS, SecretRow
from agent.store.sql import Connection
from agent.text import is_safe_line, is_safe_text
from common.errors import ConflictError, IntegrityError, NotFoundError, ValidationError
from common.eventloop import running_loop

ID_RE = re.compile(r"^sec_[a-z2-7]{26}$")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")
LABEL_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,62}$")
MAX_NAME = 200
MAX_LABELS = 32
MAX_DESCRIPTION = 1000
_COLUMNS = ", ".join(SECRET_COLUMNS)  # our own constant column names
# RFC 4648 base32 digits (A-Z then 2-7) mapped to the id alphabet in ASCII order (2-7 then a-z)
_IN_ORDER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "234567abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class SecretMeta:
    """What may be shown about a secret without its value."""

    id: str
    name: str
    version: int
    description: str
    labels: dict[str, str]
    created_at: str
    updated_at: str
    deleted_at: str | None

    def to_json(self) -> dict[str, Any]:
        """The metadata as the API shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "labels": self.labels,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "deleted_at": self.deleted_at,
        }


@dataclass(frozen=True)
class _Cached:
    meta: SecretMeta
    sealed: SealedValue


# ---------------------------------------------------------------- validation


def _nothing() -> None:
    """The default :attr:`SecretService.catch_up`: one process, nothing to catch up with."""


def validate_name(name: Any) -> str:
    """A secret name: segments of letters, digits, ``_ . -`` joined by ``/``."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise ValidationError(f"name must be a string of 1-{MAX_NAME} characters")
    if not NAME_RE.fullmatch(name) or ".." in name.split("/"):
        raise ValidationError(
            "name may hold letters, digits, '_', '.', '-' in segments joined by single '/', "
            "each segment starting with a letter, digit or '_' (e.g. 'db/prod/password')"
        )
    if ID_RE.fullmatch(name):
        raise ValidationError("name must not look like a secret id (sec_…)")
    return name


def validate_labels(labels: Any) -> dict[str, str]:
    """Labels: up to 32 ``key: value`` pairs of short printable strings."""
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise ValidationError(f"labels must be an object of at most {MAX_LABELS} entries")
    for key, value in labels.items():
        if not LABEL_KEY_RE.fullmatch(key):
            raise ValidationError(
                f"label key {key[:70]!r} must be lowercase letters, digits, '_', '.', '-' (1-63)"
            )
        if not isinstance(value, str) or len(value) > 256 or not is_safe_line(value):
            raise ValidationError(
                f"label {key!r} must have a string value of ≤ 256 characters without control "
                "or invisible format characters"
            )
    return dict(labels)


def validate_description(text: Any) -> str:
    """A description: printable text of ≤ 1000 characters."""
    if not isinstance(text, str) or len(text) > MAX_DESCRIPTION:
        raise ValidationError(
            f"description must be a string of at most {MAX_DESCRIPTION} characters"
        )
    if not is_safe_text(text):
        raise ValidationError(
            "description may hold text, newlines and tabs only (no control or invisible "
            "format characters)"
        )
    return text


def _meta(row: Any) -> SecretMeta:
    return SecretMeta(
        id=row.id,
        name=row.name,
        version=row.current_version,
        description=row.description,
        labels=json.loads(row.labels),
        created_at=row.created_at,
        updated_at=row.updated_at,
        deleted_at=row.deleted_at,
    )


# ---------------------------------------------------------------- service


class SecretService:
    """The secret operations, over the store and the key hierarchy."""

    def __init__(
        self,
        store: Store,
        keys: KeyManager,
        *,
        max_value_bytes: int = 64 * 1024,
        cache: bool = True,
        read_cache: tuple[int, float] = (0, 0.0),
        clock: Clock = utcnow,
        rng: Random = os.urandom,
        feed: ChangeFeed | None = None,
    ) -> None:
        self.store = store
        self.feed = feed or ChangeFeed()  # the uplink's sink for tracked writes
        self.keys = keys
        self.max_value_bytes = max_value_bytes
        self._clock = clock
        self._rng = rng
        self._cache_on = cache
        self._by_id: dict[str, _Cached] = {}
        self._by_name: dict[str, str] = {}
        # Rendered reads (see keep_rendered): by secret id, the cache entry the rendering was
        # made from, when it expires and the bytes; oldest first. Dropped with their entry.
        self._rendered: dict[str, tuple[_Cached, float, bytes]] = {}
        self._rendered_bytes = 0
        self._render_limit, self._render_ttl = read_cache
        self._sweep_due = False
        self._epoch = 0  # bumped by forget_cached: an answer fetched before it is not kept
        # Worker processes (agent/workers.py) set this: it forgets the caches of every
        # service when another worker has committed a write since it last looked.
        self.catch_up: Callable[[], None] = _nothing
        keys.rewrap_listeners.append(self._on_rewrap)
        keys.rekey_listeners.append(self._drop_every_rendering)

    @property
    def caching(self) -> bool:
        """Whether this service keeps current secrets in memory (SQLite: one writer)."""
        return self._cache_on

    def forget_cached(self) -> None:
        """Drop every cached secret (another worker process changed the store)."""
        self._epoch += 1
        self._by_id.clear()
        self._by_name.clear()
        self._drop_every_rendering()

    def _fresh(self, epoch: int) -> bool:
        """Whether an answer fetched since ``epoch`` may be cached (no other worker wrote since)."""
        self.catch_up()
        return epoch == self._epoch

    # ---------------------------------------------------------- helpers
    def new_id(self, created: datetime) -> str:
        """An opaque id: ``sec_`` + 26 base32 digits of the creation time's 48 bits (in ms)
        followed by 80 random bits.

        The time comes first, in base32 digits whose ASCII order is their value order, so ids
        made together sort together: a create adds to the last pages of the id indexes instead
        of a random page of each (fewer pages per commit, docs/performance.md). The time is no
        secret (``created_at`` is shown and reported wherever the id is); the random part keeps
        ids unguessable and unique.
        """
        millis = int(created.timestamp() * 1000) & (1 << 48) - 1
        raw = millis.to_bytes(6, "big") + self._rng(10)  # 128 bits: 26 base32 digits
        return "sec_" + base64.b32encode(raw).decode()[:26].translate(_IN_ORDER)

    def _check_value(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise ValidationError("value must be a string")
        raw = value.encode("utf-8")
        if not raw:
            raise ValidationError("value must not be empty")
        if len(raw) > self.max_value_bytes:
            raise ValidationError(
                f"value is larger than this agent's limit of {self.max_value_bytes} bytes"
            )
        return raw

    def _remember(self, meta: SecretMeta, sealed: SealedValue | None) -> None:
        if not self._cache_on:
            return
        old = self._by_id.get(meta.id)
        if old and old.meta.name != meta.name:
            self._by_name.pop(old.meta.name, None)
        self._drop_rendered(meta.id)
        if sealed is None or meta.deleted_at:
            self._by_id.pop(meta.id, None)
            self._by_name.pop(meta.name, None)
            return
        if old and old.meta.version > meta.version:
            return  # a later write already landed
        self._by_id[meta.id] = _Cached(meta, sealed)
        self._by_name[meta.name] = meta.id

    def _on_rewrap(self, moved: list[tuple[str, int, SealedValue]]) -> None:
        for sid, version, sealed in moved:
            hit = self._by_id.get(sid)
            if hit and hit.meta.version == version:
                self._drop_rendered(sid)
                self._by_id[sid] = _Cached(hit.meta, sealed)

    def _forget(self, secret_id: str) -> None:
        self._drop_rendered(secret_id)
        old = self._by_id.pop(secret_id, None)
        if old:
            self._by_name.pop(old.meta.name, None)

    def _row(self, conn: Connection, ref: str) -> SecretRow | None:
        """The secrets row for an id or a name, or None; a name the agent did not give that
        id (a row renamed behind its back) is an integrity error, reported."""
        stmt = hot.SECRET_BY_ID if ID_RE.fullmatch(ref) else hot.SECRET_BY_NAME
        found = conn.execute(stmt, (ref,)).fetchone()
        if not found:
            return None
        row = SecretRow(*found)
        self.keys.rows.check_name(row.id, row.name, row.mac)
        return row

    def _bound(self, row: Any) -> bool:
        """Whether a listed row's name is the one the agent bound to its id (else reported)."""
        try:
            self.keys.rows.check_name(row.id, row.name, row.mac)
        except IntegrityError:
            return False
        return True

    @property
    def track_changes(self) -> bool:
        """Whether writes record inventory change markers (the agent is enrolled)."""
        return self.feed.tracking

    def _changed(self, conn: Connection, secret_id: str, now: str) -> None:
        """Record an inventory change marker in the write's transaction (enrolled agents only)."""
        if self.feed.tracking:
            body = f'{{"secret_id":"{secret_id}"}}'  # ids are [a-z0-9_] only: no escaping needed
            conn.execute(hot.INSERT_OUTBOX, ("inventory", body, now))

    def _committed(self, meta: SecretMeta | None = None, event: ChangeEvent = "updated") -> None:
        """A write has committed: the written secret's cached DEKs go (``Envelope.forget``; every
        value and state change of a secret, here and in the rotation engine, passes its meta),
        the feed wakes the uplink if it recorded a change and tells its subscribers what changed
        (name, id, version: never the value)."""
        if meta is not None:
            self.keys.forget(meta.id)
        change = SecretChange(meta.name, meta.id, meta.version, event) if meta else None
        self.feed.committed(change)

    def cached_id(self, ref: str) -> str | None:
        """The id a reference resolves to, if it is in the cache."""
        return ref if ID_RE.fullmatch(ref) else self._by_name.get(ref)

    def cached_current(self, ref: str) -> tuple[SecretMeta, SealedValue] | None:
        """The metadata and sealed current value of a secret by id or name, if both are in the
        cache (never for PostgreSQL, whose other replicas may write); None otherwise."""
        hit = self._by_id.get(ref)  # an id (only ids are keys here): no pattern match needed
        if hit is None:
            sid = self.cached_id(ref)
            hit = self._by_id.get(sid) if sid else None
        return (hit.meta, hit.sealed) if hit is not None else None

    # ---------------------------------------------------------- rendered reads
    # The hot read (agent/api/fastread.py) may keep its whole response for a cached secret's
    # current version, value included, so that the next read skips the AES-GCM open and the
    # JSON encoding. This is the one place a value stays in clear after its request; why that
    # is safe, and the bounds: docs/threat-model.md ("rendered reads"). A rendering lives and
    # dies with the cache entry it was made from: every path that replaces or drops an entry
    # (_remember, _on_rewrap, _forget, forget_cached) drops its rendering first.

    def rendered(self, meta: SecretMeta, sealed: SealedValue, now: float) -> bytes | None:
        """The kept rendering of exactly this (meta, sealed) entry, unless it expired."""
        hit = self._rendered.get(meta.id)
        if hit is None or hit[1] <= now:
            return None
        entry = hit[0]
        return hit[2] if entry.meta is meta and entry.sealed is sealed else None

    def keep_rendered(self, meta: SecretMeta, sealed: SealedValue, body: bytes, now: float) -> None:
        """Keep ``body`` as the rendering of the cached entry (meta, sealed), if that is still
        the current entry, the cache is on, and it fits: a rendering larger than an eighth of
        the byte budget is never kept, and the oldest go first to make room."""
        entry = self._by_id.get(meta.id)
        size = len(body)
        if (
            entry is None
            or entry.meta is not meta
            or entry.sealed is not sealed
            or size > self._render_limit // 8
        ):
            return
        self._drop_rendered(meta.id)
        rendered = self._rendered
        while rendered and self._rendered_bytes + size > self._render_limit:
            self._drop_rendered(next(iter(rendered)))
        rendered[meta.id] = (entry, now + self._render_ttl, body)
        self._rendered_bytes += size
        if not self._sweep_due:
            self._schedule_sweep()

    def _drop_every_rendering(self) -> None:
        self._rendered.clear()
        self._rendered_bytes = 0

    def _drop_rendered(self, secret_id: str) -> None:
        hit = self._rendered.pop(secret_id, None)
        if hit is not None:
            self._rendered_bytes -= len(hit[2])

    def _schedule_sweep(self) -> None:
        """Drop each rendering when it expires, on a timer: reads only check the expiry of the
        secret they ask for, and an unread value must not stay in memory past its time."""
        loop = running_loop()
        if loop is None or not self._rendered:
            return
        oldest = next(iter(self._rendered.values()))[1]  # kept in expiry order: fixed TTL
        self._sweep_due = True
        loop.call_later(max(0.0, oldest - perf_counter()) + 0.01, self._sweep)

    def _sweep(self) -> None:
        self._sweep_due = False
        now = perf_counter()
        rendered = self._rendered
        while rendered:
            sid, (_, expires, _) = next(iter(rendered.items()))
            if expires > now:
                break
            self._drop_rendered(sid)
        self._schedule_sweep()

    # ---------------------------------------------------------- reads
    async def meta(self, ref: str, *, include_deleted: bool = False) -> SecretMeta:
        """Metadata of a secret by id or name (404 if unknown or, by default, deleted)."""
        hit = self.cached_current(ref)
        if hit is not None:
            return hit[0]
        row = await self.store.read(lambda c: self._row(c, ref))
        if row is None:
            raise NotFoundError(f"no secret {ref!r}")
        meta = _meta(row)
        if meta.deleted_at and not include_deleted:
            raise NotFoundError(f"secret {ref!r} is deleted; undelete it first to use it")
        return meta

    async def reveal(self, ref: str, version: int | None = None) -> tuple[SecretMeta, int, str]:
        """Metadata, the version served, and the plaintext value."""
        hit = self.cached_current(ref)
        if hit and (version is None or version == hit[0].version):
            meta, sealed = hit
            return meta, meta.version, self.keys.open(meta.id, meta.version, sealed).decode()
        epoch = self._epoch
        meta, ver, sealed = await self.store.read(self._fetch(ref, version))
        if version is None and self._fresh(epoch):
            self._remember(meta, sealed)
        return meta, ver, self.keys.open(meta.id, ver, sealed).decode()

    def _fetch(
        self, ref: str, version: int | None
    ) -> Callable[[Connection], tuple[SecretMeta, int, SealedValue]]:
        def q(conn: Connection) -> tuple[SecretMeta, int, SealedValue]:
            row = self._row(conn, ref)
            if row is None:
                raise NotFoundError(f"no secret {ref!r}")
            meta = _meta(row)
            if meta.deleted_at:
                raise NotFoundError(f"secret {ref!r} is deleted; undelete it first to read it")
            ver = meta.version if version is None else version
            vrow = conn.execute(hot.VERSION_ROW, (meta.id, ver)).fetchone()
            if vrow is None:
                raise NotFoundError(f"secret {ref!r} has no version {ver}")
            return meta, ver, SealedValue(vrow[0], bytes(vrow[1]), bytes(vrow[2]))

        return q

    async def list_page(
        self,
        *,
        prefix: str = "",
        after: str | None = None,
        limit: int = 100,
        deleted: bool = False,
        visible: list[str] | None = None,
        context: str = "",
    ) -> tuple[list[SecretMeta], str | None]:
        """A page of metadata ordered by name; returns (items, next cursor or None).

        ``visible`` (regular expressions over names) filters in the query, so a page is full of
        what the caller may see; cursors are sealed and bound to ``context`` (agent/rowauth.py).
        """
        start = self.keys.rows.open_cursor(after, context) if after is not None else None

        def q(conn: Connection) -> list[Any]:
            where = ["deleted_at IS NOT NULL" if deleted else "deleted_at IS NULL"]
            params: list[Any] = []
            if visible is not None:
                if not visible:
                    return []
                match = f"name {conn.regexp} ?"
                where.append("(" + " OR ".join([match] * len(visible)) + ")")
                params += visible
            if prefix:
                escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                where.append("name LIKE ? ESCAPE '\\'")
                params.append(escaped + "%")
            if start is not None:
                where.append("name > ?")
                params.append(start)
            params.append(limit + 1)
            # our constant columns and conditions only; every value is a bound parameter
            sql = f"SELECT {_COLUMNS} FROM kv_secrets WHERE {' AND '.join(where)} ORDER BY name LIMIT ?"  # noqa: S608
            return conn.execute(sql, params).all()

        rows = await self.store.read(q)
        page = rows[:limit]
        items = [_meta(r) for r in page if self._bound(r)]
        nxt = self.keys.rows.seal_cursor(page[-1].name, context) if len(rows) > limit else None
        return items, nxt

    async def versions(self, ref: str) -> list[dict[str, Any]]:
        """Every stored version of a secret (no values)."""
        meta = await self.meta(ref, include_deleted=True)

        def q(conn: Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT version, created_at, origin FROM kv_versions "
                "WHERE secret_id = ? AND state IS NULL ORDER BY version DESC",
                (meta.id,),
            ).all()
            return [
                {
                    "version": r.version,
                    "created_at": r.created_at,
                    "origin": r.origin,
                    "current": r.version == meta.version,
                }
                for r in rows
            ]

        return await self.store.read(q)

    async def count(self) -> int:
        """How many live (not deleted) secrets there are."""
        return int(
            await self.store.read(
                lambda c: c.execute(
                    "SELECT count(*) FROM kv_secrets WHERE deleted_at IS NULL"
                ).scalar_one()
            )
        )

    # ---------------------------------------------------------- writes
    async def create(
        self, name: str, value: str, *, description: str = "", labels: dict[str, str] | None = None
    ) -> SecretMeta:
        """A new secret at version 1."""
        validate_name(name)
        raw = self._check_value(value)
        description = validate_description(description)
        labels = validate_labels(labels or {})
        created = self._clock()
        now = created.isoformat()
        meta = SecretMeta(self.new_id(created), name, 1, description, labels, now, now, None)

        def txn(conn: Connection, sealed: SealedValue) -> None:
            self.keys.check_sealed(conn, sealed.kek_version)
            mac = self.keys.rows.name_mac(meta.id, name)
            try:
                conn.execute(
                    hot.INSERT_SECRET,
                    (meta.id, name, 1, description, _labels_json(labels), now, now, None, mac),
                )
            except conn.IntegrityError:
                raise ConflictError(
                    f"a secret named {name!r} already exists (it may be deleted: undelete or destroy it)"
                ) from None
            _insert_version(conn, meta.id, 1, sealed, now, "create")
            self._changed(conn, meta.id, now)

        async def attempt() -> SealedValue:  # sealed again if another process moved the KEKs
            sealed = self.keys.seal(meta.id, 1, raw)
            await self.store.write(lambda conn: txn(conn, sealed))
            return sealed

        epoch = self._epoch
        sealed = await self.keys.sealing(attempt)
        self._committed(meta, "created")
        if self._fresh(epoch):
            self._remember(meta, sealed)
        return meta

    async def update(
        self,
        ref: str,
        *,
        value: str | None = None,
        description: str | None = None,
        labels: dict[str, str] | None = None,
        origin: str = "update",
        also: Callable[[Connection, SecretMeta], None] | None = None,
    ) -> SecretMeta:
        """A new version when ``value`` is given; metadata changes in place otherwise.

        ``also(conn, new_meta)`` runs last in the same transaction (the uplink records a
        command's result with the rotation it caused).
        """
        raw = self._check_value(value) if value is not None else None
        if description is not None:
            validate_description(description)
        if labels is not None:
            validate_labels(labels)
        if raw is None and description is None and labels is None:
            raise ValidationError("nothing to update: give value, description or labels")
        now = self._clock().isoformat()

        def txn(conn: Connection) -> tuple[SecretMeta, SealedValue | None]:
            row = self._row(conn, ref)
            if row is None or row.deleted_at:
                raise NotFoundError(
                    f"no secret {ref!r}" if row is None else f"secret {ref!r} is deleted"
                )
            sealed = None
            version = row.current_version
            if raw is not None:
                version += 1
                sealed = self.keys.seal(row.id, version, raw)
                self.keys.check_sealed(conn, sealed.kek_version)
                try:
                    _insert_version(conn, row.id, version, sealed, now, origin)
                except conn.IntegrityError:  # a pending rotation's version
                    raise ConflictError(
                        f"secret {ref!r} is being rotated; try again in a moment"
                    ) from None
            # the new row built once from the old (unchanged labels keep their stored JSON)
            labels_json = row.labels if labels is None else _labels_json(labels)
            new = SecretMeta(
                id=row.id,
                name=row.name,
                version=version,
                description=row.description if description is None else description,
                labels=json.loads(labels_json) if labels is None else labels,
                created_at=row.created_at,
                updated_at=now,
                deleted_at=None,
            )
            conn.execute(
                hot.UPDATE_SECRET, (version, new.description, labels_json, now, None, row.id)
            )
            self._changed(conn, new.id, now)
            if also is not None:
                also(conn, new)
            return new, sealed

        epoch = self._epoch
        new, sealed = await self.keys.sealing(lambda: self.store.write(txn))
        self._committed(new, "rotated" if origin == "rotate" else "updated")
        if self._fresh(epoch):
            if sealed is None:  # metadata only: keep the cached value under the new meta
                cached = self._by_id.get(new.id)
                sealed = cached.sealed if cached else None
            if sealed is not None:
                self._remember(new, sealed)
        return new

    async def rotate(
        self,
        ref: str,
        spec: GeneratorSpec,
        *,
        also: Callable[[Connection, SecretMeta], None] | None = None,
    ) -> SecretMeta:
        """A new version with a freshly generated value (``also`` as for :meth:`update`)."""
        return await self.update(ref, value=spec.generate(), origin="rotate", also=also)

    async def delete(self, ref: str) -> SecretMeta:
        """Soft delete: the secret disappears from reads and listings until undeleted."""
        return await self._set_deleted(ref, self._clock().isoformat())

    async def undelete(self, ref: str) -> SecretMeta:
        """Bring back a soft-deleted secret."""
        return await self._set_deleted(ref, None)

    async def _set_deleted(self, ref: str, when: str | None) -> SecretMeta:
        now = self._clock().isoformat()

        def txn(conn: Connection) -> SecretMeta:
            row = self._row(conn, ref)
            if row is None:
                raise NotFoundError(f"no secret {ref!r}")
            if (row.deleted_at is None) == (when is None):
                state = "deleted" if row.deleted_at else "not deleted"
                raise ConflictError(f"secret {ref!r} is already {state}")
            meta = replace(_meta(row), deleted_at=when)
            _write_row(conn, meta)
            self._changed(conn, meta.id, now)
            return meta

        meta = await self.store.write(txn)
        self._committed(meta, "deleted" if when else "updated")
        self._forget(meta.id)
        return meta

    async def destroy(self, ref: str) -> SecretMeta:
        """Erase a soft-deleted secret and all its versions for good."""
        now = self._clock().isoformat()

        def txn(conn: Connection) -> SecretMeta:
            row = self._row(conn, ref)
            if row is None:
                raise NotFoundError(f"no secret {ref!r}")
            if row.deleted_at is None:
                raise ConflictError(f"secret {ref!r} must be deleted before it can be destroyed")
            conn.execute("DELETE FROM kv_versions WHERE secret_id = ?", (row.id,))
            conn.execute("DELETE FROM kv_secrets WHERE id = ?", (row.id,))
            self._changed(conn, row.id, now)
            return _meta(row)

        meta = await self.store.write(txn)
        self._committed(meta, "destroyed")
        self._forget(meta.id)
        await asyncio.to_thread(self.store.scrub)
        return meta


def _insert_version(
    conn: Connection, sid: str, version: int, sealed: SealedValue, now: str, origin: str
) -> None:
    row = (sid, version, sealed.kek_version, sealed.wrapped_dek, sealed.ciphertext, now, origin)
    conn.execute(hot.INSERT_VERSION, row)


def _labels_json(labels: dict[str, str]) -> str:
    """The labels column: ``json.dumps``, without its ~2 µs for the usual empty labels."""
    return json.dumps(labels) if labels else "{}"


def _write_row(conn: Connection, meta: SecretMeta) -> None:
    """Store a secret's mutable columns as ``meta`` has them."""
    conn.execute(
        hot.UPDATE_SECRET,
        (meta.version, meta.description, _labels_json(meta.labels), meta.updated_at,
         meta.deleted_at, meta.id),
    )  # fmt: skip
