"""The vault's key hierarchy in the store: keystore header, KEK lifecycle, rekey.

The keystore header (KDF, salt, iterations, MAC) lives in the store's ``kv_meta`` table, so a
rekey changes the header and re-wraps every KEK in one transaction: there is no moment where the
file and the database disagree.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.crypto import (
    KDF_DEFAULT_ITERATIONS,
    Clock,
    Envelope,
    KeySource,
    KeystoreHeader,
    MasterKey,
    Random,
    SealedValue,
    create_keystore,
    unlock_keystore,
    utcnow,
)
from agent.errors import NotInitialisedError
from agent.rowauth import RowAuth
from agent.store.db import Store, hold_migration_lock
from agent.store.sql import Connection, placeholders
from common.errors import ConflictError, IntegrityError, UnavailableError

HEADER_KEY = "keystore_header"
AUDIT_KEY = "audit_key"
ROWS_KEY = "rows_key"  # the row key of agent/rowauth.py, wrapped like the audit key
Progress = Callable[[int, int], None]
REWRAP_BATCH = 200
SEAL_ATTEMPTS = 5  # a write sealed under a KEK retired meanwhile is sealed again, this often
T = TypeVar("T")


class StaleKeysError(ConflictError):
    """A value was sealed under a KEK that another process has since retired (the writer
    follows the store and seals again; after :data:`SEAL_ATTEMPTS` the 409 reaches the user)."""


@dataclass(frozen=True)
class KekRotation:
    """What a KEK rotation did."""

    new_version: int
    rewrapped: int
    destroyed: list[int]


_KEK_STATE = "SELECT state FROM kv_keks WHERE version = ?"
_KEK_STATE_FOR_SHARE = _KEK_STATE + " FOR SHARE"
_INSERT_KEK = "INSERT INTO kv_keks (version, wrapped, state, created_at) VALUES (?, ?, ?, ?)"


def _meta_get(conn: Connection, key: str) -> str | None:
    value: str | None = conn.execute(
        "SELECT value FROM kv_meta WHERE key = ?", (key,)
    ).scalar_one_or_none()
    return value


def _meta_put(conn: Connection, key: str, value: str) -> None:
    if _meta_get(conn, key) is None:
        conn.execute("INSERT INTO kv_meta (key, value) VALUES (?, ?)", (key, value))
    else:
        conn.execute("UPDATE kv_meta SET value = ? WHERE key = ?", (value, key))


class KeyManager:
    """The unlocked envelope of one vault, and the operations on its keys."""

    def __init__(
        self,
        store: Store,
        envelope: Envelope,
        active_kek: int,
        audit_key: bytes,
        clock: Clock,
        row_key: bytes,
        header_json: str = "",
    ) -> None:
        self.store = store
        self.envelope = envelope
        self.active_kek = active_kek
        self._audit_key = audit_key
        self.rows = RowAuth(row_key)
        self._clock = clock
        self._header_json = header_json  # the keystore header this process unlocked
        # Another process may change the key set under us (``workers: N``, or replicas on one
        # PostgreSQL store): then KEKs are followed from the store (:meth:`follow`) and every
        # new value is checked, in its own transaction, to be sealed under the active KEK.
        self.shared_keys = False
        self.rotating = False
        self.rewrap_listeners: list[Callable[[list[tuple[str, int, SealedValue]]], None]] = []
        self.rekey_listeners: list[Callable[[], None]] = []  # told after a rekey committed

    def __repr__(self) -> str:
        return f"KeyManager(vault_id={self.vault_id!r}, active_kek={self.active_kek})"

    @property
    def vault_id(self) -> str:
        """The vault this key hierarchy belongs to."""
        return self.envelope.vault_id

    @property
    def audit_key(self) -> bytes:
        """The audit log's MAC key (random, wrapped by the master key)."""
        return self._audit_key

    # ------------------------------------------------------------------ create / unlock
    @classmethod
    def initialise(
        cls,
        store: Store,
        vault_id: str,
        source: KeySource,
        *,
        iterations: int = KDF_DEFAULT_ITERATIONS,
        rng: Random = os.urandom,
        clock: Clock = utcnow,
    ) -> KeyManager:
        """Write a new keystore header, the first KEK and the audit key (blocking)."""
        header, master = create_keystore(
            vault_id, source, iterations=iterations, rng=rng, clock=clock
        )
        envelope = Envelope(vault_id, master, rng=rng)
        audit_key = rng(32)
        row_key = rng(32)

        def write(conn: Connection) -> None:
            if _meta_get(conn, HEADER_KEY) is not None:
                raise ConflictError("this store already holds a vault; refusing to overwrite it")
            _meta_put(conn, HEADER_KEY, header.to_json())
            _meta_put(conn, "vault_id", vault_id)
            _meta_put(conn, AUDIT_KEY, envelope.wrap_aux("audit", audit_key).hex())
            _meta_put(conn, ROWS_KEY, envelope.wrap_aux("rows", row_key).hex())
            conn.execute(_INSERT_KEK, (1, envelope.new_kek(1), "active", clock().isoformat()))

        store.write_sync(write)
        return cls(store, envelope, 1, audit_key, clock, row_key, header.to_json())

    @classmethod
    def unlock(
        cls, store: Store, source: KeySource, *, rng: Random = os.urandom, clock: Clock = utcnow
    ) -> KeyManager:
        """Read the header, derive the master key once, load every live KEK (blocking)."""

        def load(conn: Connection) -> tuple[str | None, str | None, list[Any], str | None]:
            header_json, rows = _live_keks(conn)
            return header_json, _meta_get(conn, AUDIT_KEY), rows, _meta_get(conn, ROWS_KEY)

        header_json, audit_wrapped, rows, rows_wrapped = store.read_sync(load)
        if header_json is None or audit_wrapped is None:
            raise NotInitialisedError(
                "this store holds no vault yet; run `keyvault agent init` first"
            )
        header = KeystoreHeader.from_json(header_json)
        master = unlock_keystore(header, source)
        envelope = Envelope(header.vault_id, master, rng=rng)
        active = _load_keks(envelope, rows)
        if not active:
            raise IntegrityError("the store has no active key-encryption key")
        audit_key = envelope.unwrap_aux("audit", bytes.fromhex(audit_wrapped))
        if rows_wrapped is None:  # a store from before row MACs: seal the rows it holds, once
            row_key = store.write_sync(_adopt_rows(envelope, rng(32)))
        else:
            row_key = envelope.unwrap_aux("rows", bytes.fromhex(rows_wrapped))
        return cls(store, envelope, active, audit_key, clock, row_key, header_json)

    # ------------------------------------------------------------------ values
    def seal(self, secret_id: str, version: int, plaintext: bytes) -> SealedValue:
        """Seal a new value under the active KEK."""
        return self.envelope.seal(secret_id, version, plaintext, self.active_kek)

    def open(self, secret_id: str, version: int, sealed: SealedValue) -> bytes:
        """Open a stored value (under a KEK another process made: after following the store)."""
        if self.shared_keys and not self.envelope.has_kek(sealed.kek_version):
            self._follow(self.store.read_sync(_live_keks))
        return self.envelope.open(secret_id, version, sealed)

    # ------------------------------------------------------------------ other processes' keys
    async def follow(self) -> None:
        """Bring the loaded KEKs and the active one in step with the store, after another worker
        or replica rotated them (a KEK this process has not loaded is unwrapped; a destroyed
        one is unloaded). Raises ``UnavailableError`` when the master key was changed there."""
        self._follow(await self.store.read(_live_keks))

    def _follow(self, found: tuple[str | None, list[Any]]) -> None:
        header_json, rows = found
        self._same_master(header_json)
        live = {int(version) for version, _wrapped, _state in rows}
        for version in self.envelope.kek_versions() - live:
            self.envelope.unload_kek(version)
        self.active_kek = _load_keks(self.envelope, rows) or self.active_kek

    def _same_master(self, header_json: str | None) -> None:
        """Refuse to go on with a master key another process has replaced (a rekey there)."""
        if self._header_json and header_json is not None and header_json != self._header_json:
            raise UnavailableError(
                "the master key was changed (rekey) by another worker or replica since this "
                "agent started; restart it so that it unlocks with the new key"
            )

    def check_sealed(self, conn: Connection, kek_version: int) -> None:
        """In a write's transaction: the new value's KEK must still be the active one.

        Only where another process may rotate KEKs (:attr:`shared_keys`). Raises
        :class:`StaleKeysError` (the caller follows the store and seals again) otherwise. On
        PostgreSQL the KEK's row is share-locked, so a rotation's destroy waits for this write
        and then counts its value.
        """
        if not self.shared_keys:
            return
        if _kek_state(conn, kek_version, lock=self.store.backend == "postgresql") != "active":
            raise StaleKeysError(
                "the agent's keys were rotated by another worker or replica during this write; "
                "try again"
            )

    async def sealing(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` (which seals a value and writes it); while another process rotates
        the KEKs under it (two rotations at once can retire the KEK it just followed), follow
        the store and run it again, at most :data:`SEAL_ATTEMPTS` times in all."""
        for _ in range(SEAL_ATTEMPTS - 1):
            try:
                return await attempt()
            except StaleKeysError:
                await self.follow()
        return await attempt()

    def forget(self, secret_id: str) -> None:
        """Drop a secret's cached DEKs (after a write to it)."""
        self.envelope.forget(secret_id)

    # ------------------------------------------------------------------ KEK rotation
    async def rotate_kek(self, progress: Progress | None = None) -> KekRotation:
        """New KEK, online re-wrap of every DEK, proof none is left on the old, then destroy it."""
        if self.rotating:
            raise ConflictError("a key rotation or rekey is already running")
        self.rotating = True
        try:
            return await self._rotate_kek(progress or (lambda _d, _t: None))
        finally:
            self.rotating = False

    async def _rotate_kek(self, progress: Progress) -> KekRotation:
        now = self._clock().isoformat()
        if self.shared_keys:  # start from what the other processes left
            await self.follow()

        def add_kek(conn: Connection) -> int:
            self._same_master(_meta_get(conn, HEADER_KEY))
            version = int(conn.execute("SELECT max(version) FROM kv_keks").scalar_one()) + 1
            wrapped = self.envelope.new_kek(version)
            conn.execute(
                "UPDATE kv_keks SET state = 'retired', retired_at = ? WHERE state = 'active'",
                (now,),
            )
            conn.execute(_INSERT_KEK, (version, wrapped, "active", now))
            return version

        new = await self.store.write(add_kek)
        self.active_kek = new
        total = await self.store.read(_count_not_on(new))
        done = 0
        progress(done, total)
        while True:
            rows = await self.store.read(_rows_not_on(new, REWRAP_BATCH))
            if not rows:
                break
            updates = [
                (sid, ver, old, self.envelope.rewrap(sid, ver, SealedValue(old, dek, ct), new))
                for sid, ver, old, dek, ct in rows
            ]
            await self.store.write(_apply_rewraps(updates, new))
            for listener in self.rewrap_listeners:
                listener([(sid, ver, sealed) for sid, ver, _old, sealed in updates])
            done += len(updates)
            progress(min(done, total), total)
        remaining = await self.store.read(_count_not_on(new))
        if remaining:
            raise IntegrityError(f"{remaining} values still use an old key; nothing was destroyed")
        destroyed = await self.store.write(_destroy_retired(now))
        for version in destroyed:
            self.envelope.unload_kek(version)
        return KekRotation(new, done, destroyed)

    # ------------------------------------------------------------------ rekey
    async def rekey(
        self, new_source: KeySource, *, iterations: int = KDF_DEFAULT_ITERATIONS
    ) -> None:
        """Change the master key: a new header and every KEK re-wrapped, in one transaction."""
        if self.rotating:
            raise ConflictError("a key rotation or rekey is already running")
        self.rotating = True
        try:
            header, master = await asyncio.to_thread(
                create_keystore, self.vault_id, new_source, iterations=iterations, clock=self._clock
            )
            await self.store.write(self._rekey_txn(header, master))
            self.envelope.use_master(master)
            self._header_json = header.to_json()
            for listener in self.rekey_listeners:
                listener()
        finally:
            self.rotating = False

    def _rekey_txn(self, header: KeystoreHeader, master: MasterKey) -> Callable[[Connection], None]:
        def txn(conn: Connection) -> None:
            self._same_master(_meta_get(conn, HEADER_KEY))
            for version, wrapped in conn.execute(
                "SELECT version, wrapped FROM kv_keks WHERE state != 'destroyed'"
            ).all():
                conn.execute(
                    "UPDATE kv_keks SET wrapped = ? WHERE version = ?",
                    (self.envelope.rewrap_kek_for(master, version, wrapped), version),
                )
            audit = bytes.fromhex(_meta_get(conn, AUDIT_KEY) or "")
            _meta_put(conn, AUDIT_KEY, self.envelope.rewrap_aux_for(master, "audit", audit).hex())
            rows = bytes.fromhex(_meta_get(conn, ROWS_KEY) or "")
            _meta_put(conn, ROWS_KEY, self.envelope.rewrap_aux_for(master, "rows", rows).hex())
            _meta_put(conn, HEADER_KEY, header.to_json())

        return txn

    async def kek_status(self) -> list[dict[str, Any]]:
        """Every KEK with its state and how many values it wraps."""

        def q(conn: Connection) -> list[dict[str, Any]]:
            counts: dict[int, int] = dict(
                conn.execute(
                    "SELECT kek_version, count(*) FROM kv_versions GROUP BY kek_version"
                ).fetchall()
            )
            return [
                {"version": v, "state": s, "created_at": c, "values": counts.get(v, 0)}
                for v, s, c in conn.execute(
                    "SELECT version, state, created_at FROM kv_keks ORDER BY version"
                ).fetchall()
            ]

        return await self.store.read(q)


def _adopt_rows(envelope: Envelope, row_key: bytes) -> Callable[[Connection], bytes]:
    """Store a new row key and MAC every token row and name binding (upgrade from 0003)."""

    def txn(conn: Connection) -> bytes:
        hold_migration_lock(conn)  # replicas starting together: one adopts, the others read it
        if _meta_get(conn, ROWS_KEY) is not None:  # another replica adopted them first
            return envelope.unwrap_aux("rows", bytes.fromhex(_meta_get(conn, ROWS_KEY) or ""))
        auth = RowAuth(row_key)
        tokens = conn.execute(
            "SELECT id, name, token_hash, policy, created_at, expires_at, revoked_at, mac "
            "FROM kv_tokens"
        ).mappings()
        for row in tokens:
            mac = auth.token_mac(row)
            conn.execute("UPDATE kv_tokens SET mac = ? WHERE id = ?", (mac, row["id"]))
        for sid, name in conn.execute("SELECT id, name FROM kv_secrets").fetchall():
            mac = auth.name_mac(sid, name)
            conn.execute("UPDATE kv_secrets SET mac = ? WHERE id = ?", (mac, sid))
        _meta_put(conn, ROWS_KEY, envelope.wrap_aux("rows", row_key).hex())
        return row_key

    return txn


def _kek_state(conn: Connection, version: int, *, lock: bool = False) -> str | None:
    """KEK ``version``'s state (None: no such KEK); ``lock``: share-lock its row (PostgreSQL)."""
    sql = _KEK_STATE_FOR_SHARE if lock else _KEK_STATE
    state = conn.execute(sql, (version,)).scalar()
    return None if state is None else str(state)


def _load_keks(envelope: Envelope, rows: list[Any]) -> int:
    """Unwrap each (version, wrapped, state) KEK not yet loaded; the active one's version (0:
    none among ``rows``)."""
    active = 0
    for version, wrapped, state in rows:
        if not envelope.has_kek(version):
            envelope.load_kek(version, wrapped)
        if state == "active":
            active = int(version)
    return active


def _still_active(conn: Connection, version: int) -> None:
    """A rotation to KEK ``version`` goes on only while that KEK is the active one."""
    if _kek_state(conn, version) != "active":  # a newer rotation (another worker or replica)
        raise ConflictError(
            f"key-encryption key {version} is no longer the active one: another key rotation "
            "started meanwhile (another worker or replica); this one stopped and destroyed "
            "nothing"
        )


def _live_keks(conn: Connection) -> tuple[str | None, list[Any]]:
    """The keystore header and every KEK not destroyed: (version, wrapped, state)."""
    rows = conn.execute(
        "SELECT version, wrapped, state FROM kv_keks WHERE state != 'destroyed'"
    ).all()
    return _meta_get(conn, HEADER_KEY), list(rows)


def _count_not_on(version: int) -> Callable[[Connection], int]:
    def q(conn: Connection) -> int:
        sql = "SELECT count(*) FROM kv_versions WHERE kek_version != ?"
        return int(conn.execute(sql, (version,)).scalar_one())

    return q


def _rows_not_on(version: int, limit: int) -> Callable[[Connection], list[Any]]:
    def q(conn: Connection) -> list[Any]:
        _still_active(conn, version)  # in the same snapshot as the rows it re-wraps
        return conn.execute(
            "SELECT secret_id, version, kek_version, wrapped_dek, ciphertext FROM kv_versions "
            "WHERE kek_version != ? LIMIT ?",
            (version, limit),
        ).all()

    return q


def _apply_rewraps(
    updates: list[tuple[str, int, int, SealedValue]], target: int
) -> Callable[[Connection], None]:
    def txn(conn: Connection) -> None:
        _still_active(conn, target)
        for sid, ver, old, sealed in updates:
            conn.execute(
                "UPDATE kv_versions SET kek_version = ?, wrapped_dek = ? "
                "WHERE secret_id = ? AND version = ? AND kek_version = ?",
                (sealed.kek_version, sealed.wrapped_dek, sid, ver, old),
            )

    return txn


def _destroy_retired(now: str) -> Callable[[Connection], list[int]]:
    def txn(conn: Connection) -> list[int]:
        retired = [
            int(r)
            for r in conn.execute("SELECT version FROM kv_keks WHERE state = 'retired'").scalars()
        ]
        in_use = (
            conn.execute(
                f"SELECT count(*) FROM kv_versions WHERE kek_version IN ({placeholders(len(retired))})",  # noqa: S608
                retired,
            ).scalar_one()
            if retired
            else 0
        )
        if in_use:
            raise IntegrityError(f"{in_use} values still use a retired key; nothing was destroyed")
        conn.execute(
            "UPDATE kv_keks SET state = 'destroyed', wrapped = ?, retired_at = ? "
            "WHERE state = 'retired'",
            (b"", now),
        )
        return retired

    return txn
