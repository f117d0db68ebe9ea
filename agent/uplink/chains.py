"""The other workers' audit chains (``workers: N``), shipped by worker 0's uplink.

Worker k writes its own audit log in ``audit-w<k>/`` under the replica name ``<replica>-w<k>``
(agent/workers.py, agent/assembly.py). Its chain's epoch lives in the keystore like every
replica's: the row ``audit.replica:<hash of the name>`` names the log id, whose checkpoint row
``audit.log:<id>`` holds the epoch, both tagged under the audit key. The uplink ships chain k
from its own cursor (:func:`agent.uplink.meta.chain_cursor`), labelled with that epoch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.audit._format import LOG_NAME
from agent.audit.checkpoint import CheckpointKey, Replica, read_checkpoint
from agent.store.sql import Connection
from agent.workers import audit_folders
from common.errors import IntegrityError
from common.uplink import MAX_AUDIT_CHAIN


@dataclass(frozen=True)
class Chain:
    """Worker ``number``'s audit log: its folder, its replica name, and its file's mark."""

    number: int
    folder: Path
    replica: Replica
    mark: tuple[int, int] | None = None  # (inode, size) of audit.log when listed; None: absent


def worker_chains(data_dir: Path, replica_name: str, limit: int = MAX_AUDIT_CHAIN) -> list[Chain]:
    """The worker audit logs in ``data_dir`` now (``audit-w<k>/``, 1 <= k <= ``limit``): those
    of workers running, and those left by workers since removed (still to be shipped).

    Each carries its log file's (inode, size) as listed: a log is only appended to, and a new
    chain is a new file, so an unchanged mark means nothing new to read (blocking)."""
    out = []
    for folder in audit_folders(data_dir)[1:]:
        k = int(folder.name[len("audit-w") :])
        if 1 <= k <= limit:
            try:
                st = os.stat(folder / LOG_NAME)
                mark: tuple[int, int] | None = (st.st_ino, st.st_size)
            except OSError:
                mark = None
            out.append(Chain(k, folder, Replica(f"{replica_name}-w{k}"), mark))
    return out


def chain_epoch(conn: Connection, key: CheckpointKey, replica: Replica) -> int | None:
    """The epoch of the chain ``replica`` writes (None: that worker never opened its log).

    Raises IntegrityError when the keystore rows fail their check (edited?): the worker
    reports that itself at its start; the uplink does not guess an epoch."""
    raw = read_checkpoint(conn, replica.row)
    if raw is None:
        return None
    log_key = key.for_log(replica.bound(key, raw))
    stored = read_checkpoint(conn, log_key.row)
    if stored is None:
        raise IntegrityError("a worker's audit log is named in the keystore without a checkpoint")
    return log_key.decode(stored).epoch
