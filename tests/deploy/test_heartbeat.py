"""The heartbeat file the images' HEALTHCHECK reads: fresh while the loop runs, gone after."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

from serverkit.heartbeat import Heartbeat

# the images' check, as the Dockerfile runs it (a shell and find: no interpreter)
CHECK = 'test -n "$(find "$KEYVAULT_HEARTBEAT_FILE" -newermt \'-20 seconds\' 2>/dev/null)"'


def check(path: Path) -> int:
    env = {"PATH": os.environ["PATH"], "KEYVAULT_HEARTBEAT_FILE": str(path)}
    return subprocess.run(["/bin/sh", "-c", CHECK], env=env).returncode


async def test_heartbeat_is_fresh_while_serving_and_removed_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    path.touch()
    os.utime(path, (time.time() - 60, time.time() - 60))
    assert check(path) != 0  # a file older than 20 s fails the check (a stuck loop)
    path.touch()
    beat = Heartbeat(path, interval=0.05)  # a file from a previous run is removed at once
    assert not path.exists() and check(path) != 0
    beat.start()
    beat.start()  # idempotent: one task
    await asyncio.sleep(0.1)
    assert path.is_file() and check(path) == 0
    first = path.stat().st_mtime_ns
    await asyncio.sleep(0.15)
    assert path.stat().st_mtime_ns > first  # touched again by the loop
    beat.stop()
    await asyncio.sleep(0)
    assert not path.exists() and check(path) != 0


def test_unset_heartbeat_does_nothing() -> None:
    beat = Heartbeat.from_env({})
    assert beat.path is None
    beat.stop()
