"""The two-phase rotation of one secret (``docs/rotation.md``).

1. ``generate``, then one transaction: the new value as a **pending** version (``kv_versions``
   row with ``state = 'pending'``: readers never see it) and the ``kv_rotation`` lease.
2. ``apply`` then ``verify`` (in a worker thread: rotators block). On failure: ``revert``, then
   one transaction deletes the pending version and records the failure (attempts, reason,
   retry with backoff) with its ``rotation`` outbox event.
3. Promote, in one transaction: the pending version becomes current, the schedule moves on
   (``now + interval ± jitter``), the ``rotation`` outbox event. Earlier versions stay readable
   by number until an operator destroys them.

At start :meth:`RotationEngine.recover` discards pending versions left by a crash (re-applying
the old value when the rotator can) and reports each as ``interrupted``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from agent.audit import AuditLog
from agent.crypto import Clock, SealedValue, utcnow
from agent.rotation import policy as pol
from agent.rotation.rotators import (
    INTERNAL_ERROR,
    INTERRUPTED,
    RotationError,
    Rotator,
    SecretRef,
    build_rotator,
)
from agent.secrets import SecretMeta, SecretService, _insert_version, _meta, _write_row
from agent.settings import RotationSettings
from agent.store.hot import INSERT_OUTBOX
from agent.store.sql import Connection
from common.errors import ConflictError, KeyVaultError, NotFoundError, UnavailableError

log = logging.getLogger("keyvault.agent.rotation")
T = TypeVar("T")

POLICIES_KEY = "uplink.policies"  # agent.uplink.meta.POLICIES (not imported: no cycle)
ROTATION = "rotation"  # the outbox kind
PENDING = "pending"
MIN_LEASE = 300.0  # seconds a claim lasts; longer for slow command rotators
MAX_BACKOFF_DOUBLINGS = 10


class RotationFailedError(ConflictError):
    """A rotation ran and failed; the current value is untouched. ``reason`` is the code."""

    code = "rotation_failed"

    def __init__(self, reason: str) -> None:
        super().__init__(f"the rotation failed ({reason}); the current value is unchanged")
        self.reason = reason


class LeaseHeldError(ConflictError):
    """Another rotation of this secret is running (here or on another replica)."""

    code = "rotation_in_progress"


@dataclass(frozen=True)
class Outcome:
    """What one rotation did (the ``rotation`` event's data)."""

    secret_id: str
    policy_id: str
    outcome: str
    reason: str | None
    version: int
    rotated_at: str
    next_due_at: str

    def to_json(self) -> dict[str, Any]:
        """The event data."""
        return {
            "secret_id": self.secret_id,
            "policy_id": self.policy_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "version": self.version,
            "rotated_at": self.rotated_at,
            "next_due_at": self.next_due_at,
        }


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a daemon thread: a rotator may block (a program, a database) and must
    not hold the agent's exit (``asyncio.to_thread`` workers are joined at shutdown)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def run() -> None:
        try:
            result: tuple[bool, Any] = (True, fn(*args))
        except BaseException as exc:
            result = (False, exc)
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, *result)

    threading.Thread(target=run, name="kv-rotator", daemon=True).start()
    return await fut


def _apply_and_verify(rotator: Rotator, new: str, current: str | None) -> None:
    rotator.apply(new, current)
    rotator.verify(new)


_DISCARD_PENDING = "DELETE FROM kv_versions WHERE secret_id = ? AND version = ? AND state = ?"


def _iso(when: datetime) -> str:
    return when.isoformat()


def _enqueue(conn: Connection, kind: str, data: dict[str, Any], now: str) -> None:
    body = json.dumps(data, sort_keys=True, separators=(",", ":"))
    conn.execute(INSERT_OUTBOX, (kind, body, now))


class RotationEngine:
    """Runs rotations for one agent (one per process; ``owner`` names it in leases)."""

    def __init__(
        self,
        secrets: SecretService,
        settings: RotationSettings,
        *,
        owner: str,
        audit: AuditLog | None = None,
        vault_id: Callable[[], str | None] = lambda: None,
        clock: Clock = utcnow,
        uniform: Callable[[float, float], float] = random.uniform,
        builder: Callable[[dict[str, Any], RotationSettings, SecretRef], Rotator] = build_rotator,
    ) -> None:
        self.secrets = secrets
        self.store = secrets.store
        self.settings = settings
        self.owner = owner[:80]
        self.audit = audit
        self.vault_id = vault_id
        self.clock = clock
        self.uniform = uniform
        self.builder = builder
        self._policies_raw: Any = None
        self._policies: list[pol.Policy] = []
        self._policies_for: tuple[str | None, str | None] = (None, None)

    # ------------------------------------------------------------------ timing
    def lease_seconds(self) -> float:
        """How long a claim lasts: longer than any command the policies may run."""
        longest = max((c.timeout_seconds for c in self.settings.commands.values()), default=0)
        return max(MIN_LEASE, 2.0 * float(longest) + 60.0)

    def next_due(self, base: datetime, interval: int) -> datetime:
        """``base + interval`` moved by up to ``± jitter_fraction × interval``."""
        spread = self.settings.jitter_fraction * interval
        return base + timedelta(seconds=interval + self.uniform(-spread, spread))

    def retry_at(self, now: datetime, attempts: int) -> datetime:
        """When a rotation that failed ``attempts`` times in a row is tried again."""
        doublings = min(max(attempts - 1, 0), MAX_BACKOFF_DOUBLINGS)
        return now + timedelta(seconds=self.settings.retry_base_seconds * (2**doublings))

    # ------------------------------------------------------------------ policies
    async def policies(self) -> list[pol.Policy]:
        """The policies in scope for this vault, lowest id first (parsed once per version)."""
        doc = await self.store.read(
            lambda c: c.execute(
                "SELECT value FROM kv_meta WHERE key = ?", (POLICIES_KEY,)
            ).scalar_one_or_none()
        )
        return self.policies_from(doc)

    def policies_from(self, raw: str | None) -> list[pol.Policy]:
        """Parse the stored policy document (cached by its text and the vault id)."""
        vault = self.vault_id()
        if (raw, vault) != self._policies_for:
            doc = json.loads(raw) if raw else None
            items = doc.get("policies") if isinstance(doc, dict) else None
            self._policies = pol.parse_all(items, vault)
            self._policies_for = (raw, vault)
        return self._policies

    async def governing(self, secret: SecretMeta) -> pol.Policy | None:
        """The policy that governs ``secret``, or None."""
        return pol.governing(await self.policies(), secret.name, secret.labels)

    # ------------------------------------------------------------------ one rotation
    async def rotate(
        self,
        secret_id: str,
        policy: pol.Policy,
        *,
        actor: str | None = "rotation",
        also: Callable[[Connection, SecretMeta], None] | None = None,
        claimed: bool = False,
    ) -> SecretMeta:
        """Rotate one secret under ``policy``; the new metadata, or RotationFailedError.

        ``claimed``: the scheduler already holds the lease. ``also(conn, meta)`` runs in the
        promotion's transaction (an operator command's result). ``actor`` None: the caller
        writes the audit entries (the API's middleware does).
        """
        meta, _, current = await self.secrets.reveal(secret_id)
        ref = SecretRef(meta.id, meta.name, meta.version)
        try:
            rotator = self.builder(policy.rotator, self.settings, ref)
            new = rotator.generate(current)  # local randomness only: no blocking work
            if not isinstance(new, str) or not new:
                raise RotationError(INTERNAL_ERROR, "the rotator generated no value")
            raw = self.secrets._check_value(new)
        except RotationError as exc:
            await self._fail(meta, policy, exc.reason, None, claimed)
            self._audit(actor, meta.id, "error", 409, exc.reason)
            raise RotationFailedError(exc.reason) from None
        except KeyVaultError:
            await self._fail(meta, policy, "invalid_settings", None, claimed)
            self._audit(actor, meta.id, "error", 409, "invalid_settings")
            raise RotationFailedError("invalid_settings") from None
        version = meta.version + 1
        keys = self.secrets.keys

        async def stage() -> SealedValue:
            sealed = keys.seal(meta.id, version, raw)
            await self.store.write(self._stage(meta, policy, version, sealed, claimed))
            return sealed

        sealed = await keys.sealing(stage)
        try:
            await off_loop(_apply_and_verify, rotator, new, current)
        except BaseException as exc:
            reason = exc.reason if isinstance(exc, RotationError) else INTERNAL_ERROR
            if not isinstance(exc, RotationError | Exception):
                reason = INTERRUPTED  # cancelled (shutdown): undo, record, then re-raise
            try:
                await off_loop(rotator.revert, current, new)
            except Exception as undo:  # best effort: the failure is reported either way
                log.warning("rotation of %s: revert failed (%r)", meta.id, undo)
            await self._fail(meta, policy, reason, version, True)
            self._audit(actor, meta.id, "error", 409, reason)
            if reason == INTERRUPTED:
                raise
            if not isinstance(exc, RotationError):
                log.error("rotation of %s failed unexpectedly: %s", meta.id, type(exc).__name__)
            raise RotationFailedError(reason) from None
        promoted = await self.store.write(self._promote(meta, policy, version, also))
        self.secrets._committed(promoted, "rotated")
        self.secrets._remember(promoted, sealed)
        self._audit(actor, meta.id, "ok", 200, None)
        return promoted

    def _audit(
        self, actor: str | None, target: str, outcome: str, status: int, reason: str | None
    ) -> None:
        if self.audit is None or actor is None:
            return
        try:
            self.audit.append(op="secrets.rotate", outcome=outcome, status=status, actor=actor,
                              target=target, extra={"reason": reason} if reason else None)  # fmt: skip
        except UnavailableError:
            log.error("audit log write failed after rotating %s", target)

    def _stage(
        self, meta: SecretMeta, policy: pol.Policy, version: int, sealed: SealedValue, claimed: bool
    ) -> Callable[[Connection], None]:
        now_dt = self.clock()
        now = _iso(now_dt)
        until = _iso(now_dt + timedelta(seconds=self.lease_seconds()))

        def txn(conn: Connection) -> None:
            row = self.secrets._row(conn, meta.id)
            if row is None or row.deleted_at:
                raise NotFoundError(f"no secret {meta.id!r} (or it is deleted)")
            if row.current_version != meta.version:
                raise ConflictError("the secret changed while the rotation started; try again")
            got = conn.execute(
                "UPDATE kv_rotation SET lease_owner = ?, lease_until = ?, state = ?, "
                "policy_id = ? WHERE secret_id = ? "
                "AND (lease_until IS NULL OR lease_until < ? OR lease_owner = ?)",
                (self.owner, until, PENDING, policy.id, meta.id, now, self.owner),
            ).rowcount
            if not got:
                exists = conn.execute(
                    "SELECT secret_id FROM kv_rotation WHERE secret_id = ?", (meta.id,)
                ).scalar_one_or_none()
                if exists is not None:
                    raise LeaseHeldError("a rotation of this secret is already running")
                due = _iso(self.next_due(now_dt, policy.interval_seconds))
                conn.execute(
                    "INSERT INTO kv_rotation (secret_id, policy_id, next_due_at, state, "
                    "attempts, lease_owner, lease_until) VALUES (?, ?, ?, ?, 0, ?, ?)",
                    (meta.id, policy.id, due, PENDING, self.owner, until),
                )
            self.secrets.keys.check_sealed(conn, sealed.kek_version)
            _insert_version(conn, meta.id, version, sealed, now, "rotate")
            conn.execute(
                "UPDATE kv_versions SET state = ? WHERE secret_id = ? AND version = ?",
                (PENDING, meta.id, version),
            )
            self.secrets._changed(conn, meta.id, now)

        return txn

    def _promote(
        self,
        meta: SecretMeta,
        policy: pol.Policy,
        version: int,
        also: Callable[[Connection, SecretMeta], None] | None,
    ) -> Callable[[Connection], SecretMeta]:
        now_dt = self.clock()
        now = _iso(now_dt)
        due = _iso(self.next_due(now_dt, policy.interval_seconds))

        def txn(conn: Connection) -> SecretMeta:
            row = self.secrets._row(conn, meta.id)
            if row is None:
                raise NotFoundError(f"secret {meta.id!r} was destroyed during its rotation")
            conn.execute(
                "UPDATE kv_versions SET state = NULL WHERE secret_id = ? AND version = ?",
                (meta.id, version),
            )
            new = replace(_meta(row), version=version, updated_at=now)
            _write_row(conn, new)
            conn.execute(
                "UPDATE kv_rotation SET state = 'ok', last_rotated_at = ?, next_due_at = ?, "
                "attempts = 0, last_reason = NULL, lease_owner = NULL, lease_until = NULL, "
                "policy_id = ? WHERE secret_id = ?",
                (now, due, policy.id, meta.id),
            )
            out = Outcome(meta.id, policy.id, "ok", None, version, now, due)
            _enqueue(conn, ROTATION, out.to_json(), now)
            self.secrets._changed(conn, meta.id, now)
            if also is not None:
                also(conn, new)
            return new

        return txn

    async def _fail(
        self,
        meta: SecretMeta,
        policy: pol.Policy,
        reason: str,
        pending: int | None,
        leased: bool,
    ) -> None:
        """Discard the pending version (if any) and record the failure with its event."""
        now_dt = self.clock()
        now = _iso(now_dt)

        def txn(conn: Connection) -> None:
            if pending is not None:
                conn.execute(_DISCARD_PENDING, (meta.id, pending, PENDING))
            self._record_failure(conn, meta.id, policy.id, reason, meta.version, now_dt,
                                 leased=leased)  # fmt: skip
            self.secrets._changed(conn, meta.id, now)

        await self.store.write(txn)
        self.secrets.keys.forget(meta.id)  # the discarded pending version's DEK
        self.secrets._committed()

    def _record_failure(
        self,
        conn: Connection,
        secret_id: str,
        policy_id: str,
        reason: str,
        version: int,
        now_dt: datetime,
        *,
        leased: bool,
    ) -> None:
        now = _iso(now_dt)
        found = conn.execute(
            "SELECT attempts, lease_owner, lease_until FROM kv_rotation WHERE secret_id = ?",
            (secret_id,),
        ).first()
        attempts = (int(found.attempts) if found else 0) + 1
        retry = _iso(self.retry_at(now_dt, attempts))
        values = ("failed", reason, attempts, retry, policy_id)
        if found is None:
            conn.execute(
                "INSERT INTO kv_rotation (state, last_reason, attempts, next_due_at, policy_id, "
                "secret_id) VALUES (?, ?, ?, ?, ?, ?)",
                (*values, secret_id),
            )
        else:
            mine = found.lease_owner in (None, self.owner) or (found.lease_until or "") < now
            release = ", lease_owner = NULL, lease_until = NULL" if leased or mine else ""
            conn.execute(
                "UPDATE kv_rotation SET state = ?, last_reason = ?, attempts = ?, "  # noqa: S608
                f"next_due_at = ?, policy_id = ?{release} WHERE secret_id = ?",
                (*values, secret_id),
            )
        out = Outcome(secret_id, policy_id, "failed", reason, version, now, retry)
        _enqueue(conn, ROTATION, out.to_json(), now)

    # ------------------------------------------------------------------ recovery
    async def recover(self, *, at_start: bool = True) -> int:
        """Discard pending versions a crash left behind (ours at start, or any with an expired
        lease) and report each as ``interrupted``; returns how many."""
        now_dt = self.clock()
        now = _iso(now_dt)
        # after start, our own leases may be rotations in flight: only expired ones count
        mine = " OR r.lease_owner = ?" if at_start else ""
        sql = (
            "SELECT v.secret_id, v.version, v.kek_version, v.wrapped_dek, v.ciphertext, "  # noqa: S608
            "r.policy_id FROM kv_versions v "
            "LEFT OUTER JOIN kv_rotation r ON r.secret_id = v.secret_id WHERE v.state = ? "
            f"AND (r.lease_owner IS NULL{mine} OR r.lease_until IS NULL OR r.lease_until < ?)"
        )
        params = (PENDING, self.owner, now) if at_start else (PENDING, now)

        def q(conn: Connection) -> list[Any]:
            return conn.execute(sql, params).all()

        rows = await self.store.read(q)
        if not rows:
            return 0
        policies = {p.id: p for p in await self.policies()}
        for row in rows:
            policy = policies.get(row.policy_id) if row.policy_id else None
            await self._undo_interrupted(row, policy)
            pending = int(row.version)

            def txn(conn: Connection, row: Any = row, pending: int = pending) -> bool:
                gone = conn.execute(_DISCARD_PENDING, (row.secret_id, pending, PENDING)).rowcount
                if not gone:
                    return False  # another replica recovered it first
                self._record_failure(conn, row.secret_id, row.policy_id or "", INTERRUPTED,
                                     pending - 1, now_dt, leased=True)  # fmt: skip
                self.secrets._changed(conn, row.secret_id, now)
                return True

            if await self.store.write(txn):
                self.secrets.keys.forget(row.secret_id)
                self.secrets._committed()
                log.warning("rotation of %s was interrupted by the last stop; discarded it",
                            row.secret_id)  # fmt: skip
        return len(rows)

    async def _undo_interrupted(self, row: Any, policy: pol.Policy | None) -> None:
        """Best effort: put the old value back where the new one may be live."""
        if policy is None:
            return
        try:
            meta, _, current = await self.secrets.reveal(row.secret_id)
            sealed = SealedValue(row.kek_version, bytes(row.wrapped_dek), bytes(row.ciphertext))
            new = self.secrets.keys.open(row.secret_id, int(row.version), sealed).decode()
            rotator = self.builder(policy.rotator, self.settings,
                                   SecretRef(meta.id, meta.name, meta.version))  # fmt: skip
            await off_loop(rotator.revert, current, new)
        except Exception as exc:
            log.warning("interrupted rotation of %s: could not re-apply the old value (%r)",
                        row.secret_id, exc)  # fmt: skip

    # ------------------------------------------------------------------ claims
    async def claim(self, secret_id: str) -> bool:
        """Take the lease of a due rotation (exactly one replica wins)."""
        now_dt = self.clock()
        now = _iso(now_dt)
        until = _iso(now_dt + timedelta(seconds=self.lease_seconds()))

        def txn(conn: Connection) -> bool:
            got = conn.execute(
                "UPDATE kv_rotation SET lease_owner = ?, lease_until = ? WHERE secret_id = ? "
                "AND next_due_at <= ? AND state != ? AND (lease_until IS NULL OR lease_until < ?)",
                (self.owner, until, secret_id, now, PENDING, now),
            ).rowcount
            return bool(got)

        return bool(await self.store.write(txn))

    async def release(self, secret_id: str) -> None:
        """Drop our lease (a claimed rotation that did not start)."""

        def txn(conn: Connection) -> None:
            conn.execute(
                "UPDATE kv_rotation SET lease_owner = NULL, lease_until = NULL "
                "WHERE secret_id = ? AND lease_owner = ?",
                (secret_id, self.owner),
            )

        await self.store.write(txn)
