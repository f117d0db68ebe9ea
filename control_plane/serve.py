"""Serve one replica: the operator API and the agent gateway, until SIGTERM/SIGINT.

Once both listen, their URLs are printed and, with ``ready_file``, written there as JSON
``{"api_url": …, "gateway_url": …}`` (atomically), so a supervisor or a test started with
port 0 learns the bound ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from common.tls import write_pem
from control_plane.api_tls import api_ssl_context
from control_plane.app import build_app
from control_plane.gateway.app import GATEWAY
from control_plane.settings import ControlPlaneSettings


def _http_url(host: str, port: int, scheme: str = "http") -> str:
    host = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _freeze_startup_heap() -> None:
    """Move everything alive once the replica runs (modules, classes, caches: most of the
    heap) out of the cyclic garbage collector's reach.

    Every full collection walks every tracked object, and a full collection stops the event
    loop: with thousands of uplinks held it paused every socket for hundreds of milliseconds,
    most of it re-checking startup objects that live as long as the process. Frozen objects
    are never collected, so the startup garbage is collected first.
    """
    gc.collect()
    gc.freeze()


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD = 128 * 1024


def _pin_mmap_threshold() -> None:
    """Keep large buffers (each TLS connection's 256 KiB read buffer) in their own mappings.

    glibc raises its mmap threshold after the first big block is freed (start-up, enrollment
    storms), after which such buffers come from the reused heap, whose pages already touched
    count as resident. Pinning the threshold at glibc's default keeps an idle uplink's RSS to
    the pages it uses: measured with 2,000 uplinks, 63 → 57 KiB per connection. A no-op on other
    C libraries, or when ``MALLOC_MMAP_THRESHOLD_`` is set by the operator.
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        return
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


async def serve(
    settings: ControlPlaneSettings, *, ready_file: Path | None, echo: Callable[[str], None]
) -> None:
    """Run the replica until a termination signal, then shut down gracefully."""
    _pin_mmap_threshold()
    ssl_context = api_ssl_context(settings)  # refuses plain HTTP off loopback before anything
    runner = web.AppRunner(build_app(settings), shutdown_timeout=10)
    await runner.setup()  # opens the control plane and starts the gateway
    try:
        site = web.TCPSite(runner, settings.bind, settings.port, ssl_context=ssl_context)
        await site.start()
        scheme = "https" if ssl_context is not None else "http"
        urls = {
            "api_url": _http_url(settings.bind, int(runner.addresses[0][1]), scheme),
            "gateway_url": runner.app[GATEWAY].url if GATEWAY in runner.app else None,
        }
        echo(f"control-plane API on {urls['api_url']}")
        echo(f"agent gateway on {urls['gateway_url'] or '(disabled)'}")
        if ready_file is not None:
            write_pem(ready_file, json.dumps(urls).encode() + b"\n")
        _freeze_startup_heap()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        echo("shutting down")
    finally:
        await runner.cleanup()
