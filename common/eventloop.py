"""The event loop both servers run on: uvloop when it is installed, else asyncio's own.

uvloop's transports and TLS are compiled; on this stack they take about 15 % off the CPU per
request (docs/performance.md). The ``agent`` extra brings it on Linux.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new uvloop loop if uvloop is importable, else a default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on :func:`new_event_loop`'s kind of loop."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


_seen = threading.local()  # the loop last found running on each thread


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on this thread, or None: ``asyncio.get_running_loop()`` without
    its ``getpid()`` system call on every call (it guards against a forked child using its
    parent's loop; a child here forgets what it saw instead).

    Once found, a thread's loop is answered for as long as it runs, so a hot path that asks
    for every request costs an attribute read and ``is_running()``. A loop that stopped, or
    another loop started since, is looked up again. (A loop object never moves to another
    thread in KeyVault; one that did would be taken as still running here.)
    """
    loop: asyncio.AbstractEventLoop | None = getattr(_seen, "loop", None)
    if loop is not None and loop.is_running():
        return loop
    loop = asyncio._get_running_loop()
    _seen.loop = loop
    return loop


def _forget_in_child() -> None:
    _seen.__dict__.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def current_loop() -> asyncio.AbstractEventLoop:
    """:func:`running_loop`, raising as ``asyncio.get_running_loop()`` does when none runs."""
    loop = running_loop()
    if loop is None:
        raise RuntimeError("no running event loop")
    return loop
