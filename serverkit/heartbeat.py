"""A liveness file for container health checks that need no Python process.

Once a server is listening, :class:`Heartbeat` touches a file every few seconds from its event
loop; a HEALTHCHECK then only asks whether the file is fresh (``find FILE -newermt '-20
seconds'``), which costs a shell and a ``find`` (about 2 ms) instead of an interpreter that
imports the client stack (about 0.7 s). A stuck event loop or a dead server stops the touches,
so the check fails. The file is removed when the server starts and when it stops, so a stale one
never reports a restarting server healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

HEARTBEAT_ENV = "KEYVAULT_HEARTBEAT_FILE"
INTERVAL = 5.0


class Heartbeat:
    """Touches ``path`` every ``interval`` seconds after :meth:`start`, until :meth:`stop`."""

    def __init__(self, path: Path | None, interval: float = INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        if path is not None:
            _remove(path)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Heartbeat:
        """The heartbeat ``KEYVAULT_HEARTBEAT_FILE`` names; one that does nothing when unset."""
        value = env.get(HEARTBEAT_ENV)
        return cls(Path(value) if value else None)

    def start(self) -> None:
        """Begin touching the file (call from the running loop once the server listens)."""
        if self.path is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._beat(self.path))

    async def _beat(self, path: Path) -> None:
        try:
            while True:
                _touch(path)  # one metadata write on a tmpfs: microseconds, no thread needed
                await asyncio.sleep(self.interval)
        finally:
            _remove(path)

    def stop(self) -> None:
        """Stop touching and remove the file."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.path is not None:
            _remove(self.path)


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):  # a full or read-only disk: the check fails, as it should
        path.touch(exist_ok=True)
        os.utime(path)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
