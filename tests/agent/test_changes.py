"""The uplink's wake-ups: a write or an audit append wakes the sender at once, no polling."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from agent.audit import AuditLog
from agent.changes import ChangeFeed, Wakeup


async def test_notify_from_another_thread_wakes_the_waiter_at_once() -> None:
    wakeup = Wakeup()
    wakeup.clear()
    started = time.monotonic()
    threading.Timer(0.05, wakeup.notify).start()
    await wakeup.wait(5.0)
    assert time.monotonic() - started < 2.0


async def test_a_notification_between_clear_and_wait_is_not_lost() -> None:
    wakeup = Wakeup()
    wakeup.clear()
    wakeup.notify()
    started = time.monotonic()
    await wakeup.wait(5.0)
    assert time.monotonic() - started < 1.0


async def test_wait_without_notification_returns_after_its_timeout() -> None:
    wakeup = Wakeup()
    wakeup.clear()
    started = time.monotonic()
    await wakeup.wait(0.2)
    assert 0.15 <= time.monotonic() - started < 2.0


async def test_untracked_commits_wake_nobody_tracked_ones_do() -> None:
    feed = ChangeFeed()
    feed.wakeup.clear()
    feed.committed()
    waiter = asyncio.create_task(feed.wakeup.wait(0.3))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await waiter
    feed.track()
    feed.wakeup.clear()
    feed.committed()
    started = time.monotonic()
    await feed.wakeup.wait(5.0)
    assert feed.tracking and time.monotonic() - started < 1.0


def test_the_audit_log_tells_its_listener_after_each_acknowledged_entry(tmp_path: Path) -> None:
    told: list[int] = []
    with AuditLog(tmp_path, b"k" * 32, on_append=lambda: told.append(1)) as log:
        log.append(op="a", outcome="ok", status=200)
        log.append(op="b", outcome="ok", status=200)
    assert len(told) == 2
