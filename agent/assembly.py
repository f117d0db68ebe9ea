"""The agent's parts wired together: store, keys, secrets, tokens, audit log, metrics, jobs."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent import platform
from agent.audit import AuditLog
from agent.audit.checkpoint import (
    CHECKPOINT_KEY,
    AuditGuard,
    CheckpointKey,
    Replica,
    open_audit,
)
from agent.auth import TokenService
from agent.changes import SecretChange, Wakeup
from agent.crypto import KeySource
from agent.errors import AlreadyRunningError
from agent.jobs import JobRunner
from agent.keys import KeyManager
from agent.metrics import Metrics
from agent.secrets import SecretService
from agent.settings import AgentSettings
from agent.store.db import Store
from agent.uplink.meta import AUDIT_CURSOR, chain_cursor_key
from agent.uplink.status import UplinkStatus
from agent.workers import GEN_NAME, SharedChanges, WorkerRole
from agent.workload import JwtLogin
from common.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    from agent.rotation.engine import RotationEngine

VERSION = "0.1.0"
log = logging.getLogger("keyvault.agent")


def key_source(settings: AgentSettings) -> KeySource:
    """The master key source the settings name, with a clear error if none does."""
    if settings.master_passphrase is not None:
        return KeySource.from_passphrase(settings.master_passphrase.get_secret_value())
    if settings.master_key_credential is not None:
        return KeySource.from_key_file(credential_path(settings.master_key_credential))
    path = settings.master_key_file or settings.data_dir / "master.key"
    if settings.master_key_file is None and not path.exists():
        raise ConfigError(
            "no master key configured: set VAULT_MASTER_KEY_FILE (or master_key_file in the "
            "config file) to the 32-byte key file, or KEYVAULT_MASTER_PASSPHRASE"
        )
    return KeySource.from_key_file(path)


def credential_path(name: str) -> Path:
    """``$CREDENTIALS_DIRECTORY/<name>``: a file systemd passed with ``LoadCredential=``."""
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        raise ConfigError(
            f"master_key_credential is {name!r} but CREDENTIALS_DIRECTORY is not set: run the "
            f"agent from a systemd unit with LoadCredential={name}:/path/to/master.key, or use "
            "master_key_file instead"
        )
    path = Path(folder) / name
    if not path.is_file():
        raise ConfigError(
            f"systemd credential {name!r} is missing from {folder}: check the unit's "
            f"LoadCredential={name}:… line names the master key file"
        )
    return path


class DataDirLock:
    """An exclusive lock on a data folder, so two agents never share one store."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "agent.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunningError naming the holder's pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | platform.OPEN_FLAGS, 0o600)
        try:
            platform.lock_file(fd)
        except platform.LockedError:
            holder = platform.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunningError(
                f"another agent (pid {holder}) is already running on {self.path.parent}; "
                "stop it first or use another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        platform.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass
class Agent:
    """Everything a running agent holds."""

    settings: AgentSettings
    store: Store
    keys: KeyManager
    secrets: SecretService
    tokens: TokenService
    audit: AuditLog
    audit_guard: AuditGuard  # the chain's epoch and checkpoint, what the start found
    metrics: Metrics = field(default_factory=Metrics)
    jobs: JobRunner = field(default_factory=JobRunner)
    uplink: UplinkStatus = field(default_factory=UplinkStatus)
    audit_appended: Wakeup = field(default_factory=Wakeup)  # the uplink's audit sender awaits it
    started: float = field(default_factory=time.monotonic)
    version: str = VERSION
    rotation: RotationEngine | None = None  # policy-driven rotation (docs/rotation.md)
    jwt_login: JwtLogin | None = None  # workload identity (docs/workloads.md)
    worker: WorkerRole | None = None  # one of several worker processes (agent/workers.py)
    shared: SharedChanges | None = None  # how the workers tell each other of their writes
    _enrolled_vault: str | None = None

    @classmethod
    def open(
        cls,
        settings: AgentSettings,
        source: KeySource | None = None,
        worker: WorkerRole | None = None,
    ) -> Agent:
        """Open the store, migrate it, unlock the keys once and open the audit log (blocking).

        A ``worker`` after the first writes its own audit log (``audit-w<k>/``) under the
        replica name ``<replica>-w<k>``, with its own checkpoint row."""
        if not settings.data_dir.is_dir():
            raise ConfigError(
                f"data folder {settings.data_dir} does not exist; run `keyvault agent init` first"
            )
        store = Store(settings.storage_url, sqlite_synchronous=settings.storage.sqlite_synchronous)
        appended = Wakeup()
        try:
            store.check()
            store.migrate()
            keys = _unlock(store, settings, source)
            keys.shared_keys = store.backend == "postgresql"  # other replicas may rotate KEKs
            folder, row, log_replica = _audit_identity(settings, store, worker)
            audit, guard = open_audit(
                lambda: AuditLog(
                    folder,
                    keys.audit_key,
                    fsync=settings.audit_fsync,
                    on_append=appended.notify,
                ),
                CheckpointKey(keys.audit_key, keys.vault_id, row),
                store,
                log_replica,
                cursor=_audit_cursor_key(worker),
            )
        except BaseException:
            store.close()
            raise
        secrets = SecretService(
            store,
            keys,
            max_value_bytes=settings.max_value_bytes,
            cache=store.backend == "sqlite",
            read_cache=(settings.read_cache.max_bytes, settings.read_cache.ttl_seconds),
        )
        from agent.rotation.engine import RotationEngine  # only for a running agent

        agent = cls(settings, store, keys, secrets, TokenService(store, keys.rows), audit, guard)
        keys.rows.on_tamper = agent.report_tampering
        agent.audit_appended = appended
        agent.jwt_login = JwtLogin(settings.auth.jwt, agent.tokens)
        agent._enrolled_vault = _enrolled_vault_id(settings)
        agent.rotation = RotationEngine(
            secrets, settings.rotation, owner=rotation_owner(settings), audit=audit,
            vault_id=agent.control_plane_vault_id,
        )  # fmt: skip
        if worker is not None and worker.count > 1:
            agent.join_workers(worker)
        return agent

    def join_workers(self, worker: WorkerRole) -> None:
        """Share writes with the other workers: bump our counter after each commit, and let
        the caches catch up with theirs (agent/workers.py)."""
        self.worker = worker
        self.shared = SharedChanges(self.settings.data_dir / GEN_NAME, worker.index, worker.count)
        self.store.on_commit = self.shared.bump
        self.keys.shared_keys = True  # another worker may rotate the KEKs
        self.tokens.catch_up = self.catch_up
        self.secrets.catch_up = self.catch_up

    def catch_up(self) -> None:
        """If another worker committed a write since we last looked: forget every cache that
        could now be stale and tell change subscribers to re-read (``resync``)."""
        if self.shared is not None and self.shared.moved():
            self.tokens.forget_cached()
            self.secrets.forget_cached()
            self.secrets.feed.committed(SecretChange("", "", 0, "resync"))

    def control_plane_vault_id(self) -> str | None:
        """The vault id the control plane knows this agent by (None when not enrolled)."""
        return self.uplink.vault_id or self._enrolled_vault

    def report_tampering(self, what: str) -> None:
        """A row in the store the agent did not write: count it and say so (never silently)."""
        self.metrics.integrity_failures += 1
        log.error("integrity: %s was not written by this agent (store tampered with?)", what)

    def close(self) -> None:
        """Checkpoint and close the audit log, close the store."""
        try:
            self.audit_guard.save_sync(self.audit, self.store)
        except Exception:  # the log itself is intact; the next start compares with an older one
            log.exception("writing the last audit checkpoint failed")
        self.audit.close()
        self.store.close()
        if self.shared is not None:
            self.shared.close()

    @property
    def uptime(self) -> float:
        """Seconds since the agent opened."""
        return time.monotonic() - self.started


def _unlock(store: Store, settings: AgentSettings, source: KeySource | None) -> KeyManager:
    """Unlock with the configured key; after a rekey interrupted between its commit and its
    config update, with the key the prepared config names (agent/rekey.py)."""
    from agent import rekey

    try:
        keys = KeyManager.unlock(store, source or key_source(settings))
    except IntegrityError:
        leftover = rekey.recover(settings.data_dir) if source is None else None
        if leftover is None:
            raise
        keys = KeyManager.unlock(store, KeySource.from_key_file(leftover))
        rekey.promote(settings.data_dir)
        return keys
    rekey.discard(settings.data_dir)
    return keys


def _audit_identity(
    settings: AgentSettings, store: Store, worker: WorkerRole | None
) -> tuple[Path, str, Replica | None]:
    """The audit log's folder, its checkpoint row and its replica (None: the single SQLite
    log). Worker 0 is the agent as one process has it; worker k is replica ``<name>-w<k>``."""
    if worker is None or worker.index == 0:
        log_replica = None if store.backend == "sqlite" else replica(settings)
        return settings.data_dir, _checkpoint_row(settings, store), log_replica
    own = Replica(replica(settings).name + worker.name_suffix)
    return worker.audit_folder(settings.data_dir), f"{CHECKPOINT_KEY}:{own.name}", own


def _audit_cursor_key(worker: WorkerRole | None) -> str:
    """The uplink cursor of the chain this process writes: chain 0's, or worker k's own."""
    if worker is None or worker.index == 0:
        return AUDIT_CURSOR
    return chain_cursor_key(worker.index)


def _checkpoint_row(settings: AgentSettings, store: Store) -> str:
    """The audit checkpoint's ``kv_meta`` key on SQLite; on PostgreSQL the per-host row an
    older version kept, adopted once (each log now has its own row, by its log id)."""
    if store.backend == "sqlite":
        return CHECKPOINT_KEY
    return f"{CHECKPOINT_KEY}:{rotation_owner(settings)}"


def replica(settings: AgentSettings) -> Replica:
    """This agent among the replicas of a shared store: ``replica_name`` (the pod name), else
    the host name and data folder."""
    return Replica(settings.replica_name or rotation_owner(settings))


def rotation_owner(settings: AgentSettings) -> str:
    """This agent's name in rotation leases: stable across restarts, distinct per data folder."""
    folder = hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:16]
    return f"{socket.gethostname()[:48]}:{folder}"


def _enrolled_vault_id(settings: AgentSettings) -> str | None:
    from agent.uplink.state import UplinkFiles

    with contextlib.suppress(Exception):  # a broken state.json is the uplink's to report
        enrollment = UplinkFiles(settings.uplink_dir).load_state()
        return enrollment.vault_id if enrollment else None
    return None
