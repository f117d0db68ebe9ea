"""Worker processes sharing one data folder (``workers: N``): who each one is, and how a write
committed by one makes the others forget what they cached.

Every worker is a full agent over the same store. What one worker caches in memory (tokens by
hash, secrets' current sealed version and metadata by id and name) may be made stale by a
write committed through another, so the workers share a small file, ``workers.gen``, mapped
into each: one 8-byte counter per worker. A worker's store bumps its own counter on its writer
thread after each commit that changed shared state and *before* the writer hears back, so any
request that begins after a write was acknowledged finds the counter moved. Each worker looks
at the others' counters as every request begins (and every :data:`FOLLOW_EVERY` seconds for
its background readers and open change streams); when one moved it forgets every such cache
and tells its change feed's subscribers to ``resync``. The DEK cache needs nothing: it is keyed
by the exact sealed row, so another worker's write can only make an entry unused, never wrong.
The KEKs follow the store instead (``KeyManager.shared_keys``): a value under a KEK this worker
never loaded loads it, and a new value sealed under a KEK another worker's rotation retired is
refused in its own transaction and sealed again, so nothing is stored under a destroyed KEK.

With one worker (the default) none of this exists: no file, no check, no hook.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent import platform

GEN_NAME = "workers.gen"  # in the data folder; rewritten by the parent at each start
SLOT = 8
FOLLOW_EVERY = 0.1  # seconds between looks at the other workers' counters while idle
_COUNTER = struct.Struct("<Q")


def create_counters(data_dir: Path, count: int) -> Path:
    """Write a zeroed ``workers.gen`` for ``count`` workers (the parent, holding the lock)."""
    path = data_dir / GEN_NAME
    tmp = data_dir / f"{GEN_NAME}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | platform.OPEN_FLAGS, 0o600)
    try:
        os.write(fd, bytes(SLOT * count))
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


class SharedChanges:
    """One worker's view of ``workers.gen``: bump its own counter, notice the others'."""

    def __init__(self, path: Path, index: int, count: int) -> None:
        fd = os.open(path, os.O_RDWR | platform.OPEN_FLAGS)
        try:
            self._map = mmap.mmap(fd, SLOT * count)
        finally:
            os.close(fd)
        self._own = SLOT * index
        self._lock = threading.Lock()
        self._seen = self._others()

    def _others(self) -> bytes:
        m = self._map
        return m[: self._own] + m[self._own + SLOT :]

    def bump(self) -> None:
        """This worker committed a write (called on the store's writer thread)."""
        with self._lock:
            (value,) = _COUNTER.unpack_from(self._map, self._own)
            _COUNTER.pack_into(self._map, self._own, value + 1)

    def moved(self) -> bool:
        """Whether another worker committed a write since the last call that said so."""
        now = self._others()
        if now == self._seen:
            return False
        self._seen = now
        return True

    def close(self) -> None:
        """Unmap the file."""
        self._map.close()


@dataclass(frozen=True)
class WorkerRole:
    """Which of ``count`` worker processes this agent is (index 0 runs the background services)."""

    index: int
    count: int

    @property
    def runs_services(self) -> bool:
        """Whether this worker runs the uplink, scheduler, templates and webhooks."""
        return self.index == 0

    @property
    def name_suffix(self) -> str:
        """``-w<k>`` for workers after the first; the first keeps the agent's own identity."""
        return f"-w{self.index}" if self.index else ""

    def audit_folder(self, data_dir: Path) -> Path:
        """Where this worker's audit log lives: worker 0 the data folder (as one process does),
        worker k ``audit-w<k>/`` (created private)."""
        if self.index == 0:
            return data_dir
        folder = data_dir / f"audit-w{self.index}"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder


def audit_folders(data_dir: Path) -> list[Path]:
    """Every audit log folder in ``data_dir``: its own, then each worker's (``audit-w<k>``)."""
    extra = [p for p in data_dir.glob("audit-w*") if p.is_dir() and p.name[7:].isdigit()]
    return [data_dir, *sorted(extra, key=lambda p: int(p.name[7:]))]


async def follow(check: Callable[[], None], stop: asyncio.Event) -> None:
    """Call ``check()`` every :data:`FOLLOW_EVERY` seconds until ``stop`` is set."""
    while not stop.is_set():
        check()
        try:
            await asyncio.wait_for(stop.wait(), FOLLOW_EVERY)
        except TimeoutError:
            continue
