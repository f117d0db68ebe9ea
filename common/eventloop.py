"""The event loop both servers run on: uvloop when it is installed, else asyncio's own.

uvloop's transports and TLS are compiled; on this stack they take about 15 % off the CPU per
request (docs/performance.md). The ``agent`` extra brings it on Linux.
"""

from __future__ import annotations

import asyncio
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
