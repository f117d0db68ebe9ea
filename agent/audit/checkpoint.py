"""An audit log that cannot disappear quietly: the chain's epoch and a checkpoint in the keystore.

The audit log's MAC chain shows edits, gaps and a cut-off tail, but not the whole log deleted or
both its files restored from an older copy. The keystore (``kv_meta``) therefore keeps::

    audit.checkpoint = {"epoch", "seq", "mac", "tag"}
    tag = HMAC-SHA256(HKDF(audit key, "keyvault audit checkpoint"), vault, epoch, seq, mac)

The audit key is wrapped by the master key, so only the vault's owner can write a checkpoint that
verifies, and a rekey (which re-wraps the audit key) keeps it valid. The checkpoint follows the
log at most :data:`CHECKPOINT_EVERY` seconds behind and is written at a clean shutdown.

Replicas sharing one PostgreSQL store each write their own log (:class:`Replica`). Each log has
an identity, a random *log id* made with it and kept in ``audit.id`` beside it; its checkpoint is
the row ``audit.log:<log id>`` (the row's name is bound into the tag), and the row
``audit.replica:<hash of the replica name>`` names the log id that replica writes (tagged too).
A replica checks only its own log. Its log missing while the store names one for it is
"missing"; its folder holding another log than the one the store names for it is "replaced".
A replica name the store does not know starts a new log id: legitimate for a new replica, and
also all that a replica whose whole folder was wiped *and* whose name changed looks like (so
name replicas stably: ``replica_name``, the StatefulSet pod name). A SQLite store holds one
agent's log: its checkpoint stays the single row ``audit.checkpoint``.

At start (:func:`open_audit`), a log that is missing, shorter than the checkpoint, no longer holds
the checkpointed entry, or cannot be opened at all, is a *problem*: its files are kept aside in
``audit-damaged-<time>/`` as evidence, a new chain starts with the next epoch (the uplink's audit
cursor starts over), an ``audit_failure`` alert is queued for the control plane and ``/health``
shows it. While running (:class:`Checkpointer`), a log file removed or replaced under the agent
is reported the same way. Every text here is fixed: no name or value leaves in one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.audit._format import HEAD_NAME, LOG_NAME
from agent.audit.reader import iter_entries
from agent.audit.writer import AuditLog
from agent.background import Background
from agent.store.db import Store
from agent.store.sql import Connection
from agent.uplink import meta, outbox
from common.errors import IntegrityError, UnavailableError

log = logging.getLogger("keyvault.agent.audit")
CHECKPOINT_KEY = "audit.checkpoint"
LOG_ID_NAME = "audit.id"  # the log's identity file, beside audit.log
LOG_ROW = "audit.log:"  # + log id: that log's checkpoint
REPLICA_ROW = "audit.replica:"  # + hash of the replica name: the log id that replica writes
CHECKPOINT_EVERY = 1.0  # seconds between checkpoints while entries are written
PROBLEMS = {  # fixed texts: they go to /health and, as the alert message, upstream
    "missing": "the audit log was missing at start (deleted?); a new audit chain was started",
    "truncated": "the audit log was truncated (its last entries are gone); a new audit chain "
    "was started",
    "rolled back": "the audit log was rolled back to an older copy; a new audit chain was started",
    "damaged": "the audit log could not be opened (edited, garbled, or its head file is "
    "gone); a new audit chain was started",
    "checkpoint": "the audit checkpoint in the keystore failed its check (edited?); a new "
    "audit chain was started",
    "removed": "the audit log was removed or replaced while the agent ran",
    "replaced": "the audit log in this replica's folder is not the one the keystore names for "
    "this replica (its own log is gone: volume swapped or copied?); a new audit chain was started",
    "identity": "the audit log's identity file audit.id failed its check (edited?); a new "
    "audit chain was started",
}


@dataclass(frozen=True)
class Checkpoint:
    """Where the audit chain was: its epoch and an entry ``(seq, mac)`` it reached."""

    epoch: int
    seq: int
    mac: str


@dataclass
class AuditState:
    """The audit chain's integrity as this process found it (shown in ``/health``)."""

    epoch: int = 1
    problem: str | None = None  # a key of PROBLEMS
    detected_at: str | None = None
    reported: set[str] = field(default_factory=set)

    def note(self, problem: str) -> None:
        """Record a problem (the first one's time is kept)."""
        self.problem = problem
        self.detected_at = self.detected_at or datetime.now(UTC).isoformat()

    def to_json(self) -> dict[str, Any]:
        """``{"status": "ok"|"broken", "epoch", "problem", "detected_at"}``."""
        return {
            "status": "broken" if self.problem else "ok",
            "epoch": self.epoch,
            "problem": PROBLEMS[self.problem] if self.problem else None,
            "detected_at": self.detected_at,
        }


class CheckpointKey:
    """Tags and checks checkpoints of one vault (the key never shows in ``repr``)."""

    __slots__ = ("_key", "row", "vault_id")

    def __init__(self, audit_key: bytes, vault_id: str, row: str = CHECKPOINT_KEY) -> None:
        hkdf = HKDF(hashes.SHA256(), 32, salt=None, info=b"keyvault audit checkpoint")
        self._key = hkdf.derive(audit_key)
        self.vault_id = vault_id
        self.row = row  # the kv_meta key: one per audit log (replicas sharing a store)

    def __repr__(self) -> str:
        return f"CheckpointKey(vault_id={self.vault_id!r}, row={self.row!r})"

    def for_log(self, log_id: str) -> CheckpointKey:
        """The same key for the checkpoint row of log ``log_id``."""
        other = object.__new__(CheckpointKey)
        other._key, other.vault_id, other.row = self._key, self.vault_id, LOG_ROW + log_id
        return other

    def seal(self, *parts: str | int) -> str:
        """The tag of ``parts`` under this vault (checkpoints, log ids, replica bindings)."""
        msg = json.dumps([self.vault_id, *parts], separators=(",", ":"))
        return hmac.new(self._key, msg.encode(), hashlib.sha256).hexdigest()

    def _tag(self, c: Checkpoint) -> str:
        return self.seal(self.row, c.epoch, c.seq, c.mac)

    def encode(self, c: Checkpoint) -> str:
        """The ``kv_meta`` value of a checkpoint."""
        doc = {"epoch": c.epoch, "seq": c.seq, "mac": c.mac, "tag": self._tag(c)}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"))

    def decode(self, raw: str) -> Checkpoint:
        """A stored checkpoint, or IntegrityError if it was not written with this key."""
        try:
            doc = json.loads(raw)
            c = Checkpoint(int(doc["epoch"]), int(doc["seq"]), str(doc["mac"]))
            tag = str(doc["tag"])
        except (ValueError, KeyError, TypeError):
            raise IntegrityError("the audit checkpoint is garbled") from None
        if c.epoch < 1 or c.seq < 0 or not hmac.compare_digest(tag, self._tag(c)):
            raise IntegrityError("the audit checkpoint failed its check")
        return c


def read_checkpoint(conn: Connection, row: str = CHECKPOINT_KEY) -> str | None:
    """The raw stored checkpoint, or None."""
    value: str | None = conn.execute(
        "SELECT value FROM kv_meta WHERE key = ?", (row,)
    ).scalar_one_or_none()
    return value


def write_checkpoint(conn: Connection, row: str, value: str) -> None:
    """Store a checkpoint (insert or replace)."""
    done = conn.execute("UPDATE kv_meta SET value = ? WHERE key = ?", (value, row))
    if done.rowcount == 0:
        conn.execute("INSERT INTO kv_meta (key, value) VALUES (?, ?)", (row, value))


# --------------------------------------------------------------------------- at start


def _files(folder: Path) -> list[Path]:
    names = (LOG_NAME, HEAD_NAME, LOG_ID_NAME)
    return [folder / name for name in names if (folder / name).exists()]


def _has_entries(folder: Path) -> bool:
    path = folder / LOG_NAME
    return path.exists() and path.stat().st_size > 0


def _entry(folder: Path, seq: int) -> dict[str, Any] | None:
    """Entry ``seq`` of the log (unchecked), or None when the log ends before it."""
    for entry in iter_entries(folder, since_seq=seq - 1):
        return entry if entry.get("seq") == seq else None
    return None


def compare(audit: AuditLog, checkpoint: Checkpoint | None) -> str | None:
    """The problem an opened log shows against the checkpoint (None: it is where it should be)."""
    if checkpoint is None or checkpoint.seq == 0:
        return None
    seq, _ = audit.head
    if seq == 0:
        return "missing"
    if seq < checkpoint.seq:
        return "rolled back"  # a shorter log whose head agrees with it: an older copy of both
    entry = _entry(audit.folder, checkpoint.seq)
    if entry is None or entry.get("mac") != checkpoint.mac:
        return "rolled back"  # restored, then written over
    return None


def classify_refusal(folder: Path, checkpoint: Checkpoint | None) -> str:
    """Why a log that cannot be opened is not usable: missing, truncated, or damaged."""
    if not _has_entries(folder):
        return "missing"
    if checkpoint is not None and checkpoint.seq > 0:
        with contextlib.suppress(UnavailableError):
            if _entry(folder, checkpoint.seq) is None:
                return "truncated"
    return "damaged"


def set_aside(folder: Path, epoch: int) -> Path | None:
    """Move the damaged chain's files into ``audit-damaged-<time>-epoch<N>/`` (0700)."""
    files = _files(folder)
    if not files:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    aside = folder / f"audit-damaged-{stamp}-epoch{epoch}"
    aside.mkdir(mode=0o700)
    for path in files:
        os.replace(path, aside / path.name)
    return aside


@dataclass
class AuditGuard:
    """The checkpoint key, what the start found, and the last checkpoint written."""

    key: CheckpointKey
    state: AuditState
    saved: Checkpoint

    def due(self, audit: AuditLog) -> Checkpoint | None:
        """The checkpoint to write now: the log's head, if it moved since the last one."""
        seq, mac = audit.head
        if seq == self.saved.seq and mac == self.saved.mac:
            return None
        return Checkpoint(self.state.epoch, seq, mac)

    async def save(self, audit: AuditLog, store: Store) -> None:
        """Write the checkpoint if the log moved."""
        current = self.due(audit)
        if current is not None:
            value = self.key.encode(current)
            await store.write(
                lambda conn: write_checkpoint(conn, self.key.row, value), shared=False
            )
            self.saved = current

    def save_sync(self, audit: AuditLog, store: Store) -> None:
        """Write the checkpoint if the log moved (blocking: at a clean shutdown)."""
        current = self.due(audit)
        if current is not None:
            value = self.key.encode(current)
            store.write_sync(lambda conn: write_checkpoint(conn, self.key.row, value), shared=False)
            self.saved = current

    async def watch(self, audit: AuditLog, store: Store) -> None:
        """Checkpoint, and report (once) a log file that is gone, replaced or cut under us."""
        await self.save(audit, store)
        if not audit.intact() and "removed" not in self.state.reported:
            self.state.reported.add("removed")
            self.state.note("removed")
            log.error("audit: %s", PROBLEMS["removed"])
            await store.write(lambda conn: _queue_alert(conn, PROBLEMS["removed"]))


def open_audit(
    make_log: Callable[[], AuditLog],
    key: CheckpointKey,
    store: Store,
    replica: Replica | None = None,
    cursor: str = meta.AUDIT_CURSOR,
) -> tuple[AuditLog, AuditGuard]:
    """Open the audit log (``make_log()``) against the keystore's checkpoint (blocking).

    With ``replica`` (a shared PostgreSQL store) the log's identity picks its checkpoint row
    (:func:`identify`) and ``key.row`` is only the row an older version kept, adopted once.
    A problem sets the damaged files aside, starts the next epoch with a new log, forgets the
    uplink's audit cursor of this log's chain (``cursor``: worker k passes its own, so a damaged
    worker log never resets chain 0's) and queues an ``audit_failure`` alert — all before the
    agent serves.
    """
    state = AuditState()
    audit = make_log()
    found = identify(audit.folder, key, store, replica, state)
    checkpoint = found.checkpoint
    epoch = checkpoint.epoch if checkpoint else 1
    if not _usable(audit, checkpoint, state):  # keep what is left, start the next epoch
        aside = set_aside(audit.folder, epoch)
        epoch += 1
        log.error(
            "audit: %s (what was left: %s); now on audit chain epoch %d",
            PROBLEMS[state.problem or "damaged"],
            aside or "nothing",
            epoch,
        )
        audit = make_log().open()
    state.epoch = epoch
    current = Checkpoint(epoch, *audit.head)
    broken = state.problem
    log_key = found.key

    def save(conn: Connection) -> None:
        write_checkpoint(conn, log_key.row, log_key.encode(current))
        if replica is not None:
            write_checkpoint(conn, replica.row, replica.binding(key, found.log_id))
            if found.legacy:  # the older version's row now lives on as the log's own
                conn.execute("DELETE FROM kv_meta WHERE key = ?", (key.row,))
        if broken:
            conn.execute("DELETE FROM kv_meta WHERE key = ?", (cursor,))
            _queue_alert(conn, PROBLEMS[broken])

    try:
        store.write_sync(save)  # the store first: a crash before the id file is written
        if replica is not None:  # leaves the replica's row naming the log, which still fits
            write_log_id(audit.folder, key, found.log_id)
    except BaseException:
        audit.close()
        raise
    return audit, AuditGuard(log_key, state, current)


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class Replica:
    """One of the agents sharing a PostgreSQL store, by its stable name (``replica_name``)."""

    name: str

    @property
    def row(self) -> str:
        """Its ``kv_meta`` row (the name hashed: any length fits the 64-character key)."""
        return REPLICA_ROW + hashlib.sha256(self.name.encode()).hexdigest()[:32]

    def binding(self, key: CheckpointKey, log_id: str) -> str:
        """The row's value: the log id this replica writes, tagged."""
        tag = key.seal("audit replica", self.name, log_id)
        return json.dumps({"log": log_id, "tag": tag}, sort_keys=True, separators=(",", ":"))

    def bound(self, key: CheckpointKey, raw: str) -> str:
        """The log id in a stored binding; IntegrityError when it fails its check."""
        return _sealed_id(key, raw, "audit replica", self.name)


@dataclass(frozen=True)
class Identity:
    """Which log the folder should hold: its id, its checkpoint and the key of its row."""

    log_id: str
    key: CheckpointKey
    checkpoint: Checkpoint | None
    legacy: bool = False  # the checkpoint came from an older version's per-host row


def _sealed_id(key: CheckpointKey, raw: str, *context: str) -> str:
    try:
        doc = json.loads(raw)
        log_id, tag = str(doc["log"]), str(doc["tag"])
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("an audit log identity record is garbled") from None
    ok = len(log_id) == 32 and all(c in "0123456789abcdef" for c in log_id)
    if not ok or not hmac.compare_digest(tag, key.seal(*context, log_id)):
        raise IntegrityError("an audit log identity record failed its check")
    return log_id


def read_log_id(folder: Path, key: CheckpointKey) -> str | None:
    """The log id in ``folder/audit.id`` (None: no such file); IntegrityError if it fails."""
    try:
        raw = (folder / LOG_ID_NAME).read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        raise IntegrityError("the audit log identity file cannot be read") from None
    return _sealed_id(key, raw, "audit log id")


def write_log_id(folder: Path, key: CheckpointKey, log_id: str) -> None:
    """Write ``folder/audit.id`` (0600, atomically) unless it already names ``log_id``."""
    with contextlib.suppress(IntegrityError):
        if read_log_id(folder, key) == log_id:
            return
    tag = key.seal("audit log id", log_id)
    text = json.dumps({"log": log_id, "tag": tag}, sort_keys=True, separators=(",", ":"))
    tmp = folder / f"{LOG_ID_NAME}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (text + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, folder / LOG_ID_NAME)
    except OSError as exc:
        raise UnavailableError(
            f"the audit log identity file {folder / LOG_ID_NAME} cannot be written: "
            f"{exc.strerror or exc}; check the data folder is writable and not full"
        ) from None


def identify(
    folder: Path, key: CheckpointKey, store: Store, replica: Replica | None, state: AuditState
) -> Identity:
    """Which log ``folder`` should hold and its checkpoint (problems found are noted).

    Without a replica (a SQLite store: one log) it is the single row ``key.row``. Otherwise the
    folder's ``audit.id`` and the store's row for the replica decide: both agreeing, or one of
    them alone, name the log (a lost ``audit.id`` is rebuilt; a log gone while the store names
    one for this replica is then found "missing"); disagreeing, the folder holds another log
    than this replica's ("replaced"). Neither: a new log id, adopting an older version's row.
    """
    if replica is None:
        return Identity("", key, _load(store, key, state))
    try:
        local = read_log_id(folder, key)
    except IntegrityError:
        state.note("identity")
        local = None
    raw = store.read_sync(lambda conn: read_checkpoint(conn, replica.row))
    bound = None
    if raw is not None:
        try:
            bound = replica.bound(key, raw)
        except IntegrityError:
            state.note("checkpoint")
    if local is not None and bound is not None and local != bound:
        state.note("replaced")
    log_id = bound or local
    if log_id is not None:
        return Identity(log_id, key.for_log(log_id), _load(store, key.for_log(log_id), state))
    log_id = secrets.token_hex(16)
    legacy = _load(store, key, state)  # the row an older version kept for this host and folder
    return Identity(log_id, key.for_log(log_id), legacy, legacy=legacy is not None)


def _load(store: Store, key: CheckpointKey, state: AuditState) -> Checkpoint | None:
    """The stored checkpoint; None (and the problem noted) when it fails its check."""
    raw = store.read_sync(lambda conn: read_checkpoint(conn, key.row))
    if raw is None:
        return None
    try:
        return key.decode(raw)
    except IntegrityError:
        state.note("checkpoint")
        return None


def _usable(audit: AuditLog, checkpoint: Checkpoint | None, state: AuditState) -> bool:
    """Open ``audit``; True if it is where the checkpoint says, else closed (problem noted)."""
    try:
        audit.open()
    except (UnavailableError, IntegrityError) as exc:
        log.error("audit log refused at start: %s", exc.message)
        state.note(classify_refusal(audit.folder, checkpoint))
        return False
    problem = compare(audit, checkpoint)
    if problem is None and checkpoint is None and audit.head[0] > 0:
        log.warning(
            "no audit checkpoint in the keystore yet; starting one at entry %d (the first "
            "start of this version, or the checkpoint was removed: the control plane's head "
            "check still sees a log that went back)",
            audit.head[0],
        )
    if problem is None and state.problem is None:
        return True
    audit.close()
    if problem == "missing":  # open made these files for a new chain: nothing to keep
        for path in (audit.log_path, audit.head_path):
            path.unlink(missing_ok=True)
    if state.problem is None:
        state.note(problem or "checkpoint")
    return False


def _queue_alert(conn: Connection, message: str) -> None:
    outbox.enqueue(
        conn,
        outbox.ALERT,
        {"kind": "audit_failure", "message": message},
        datetime.now(UTC).isoformat(),
    )


# --------------------------------------------------------------------------- while running


class Checkpointer(Background):
    """Runs :meth:`AuditGuard.watch` every :data:`CHECKPOINT_EVERY` seconds while the agent runs."""

    task_name = "audit-checkpoint"

    def __init__(self, guard: AuditGuard, audit: AuditLog, store: Store) -> None:
        super().__init__()
        self.guard, self.audit, self.store = guard, audit, store

    async def run(self) -> None:
        """Until stopped; never raises (a failed write is tried again next time)."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), CHECKPOINT_EVERY)
            try:
                await self.guard.watch(self.audit, self.store)
            except Exception:
                log.exception("writing the audit checkpoint failed; trying again")
