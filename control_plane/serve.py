"""Serve one replica: the operator API and the agent gateway, until SIGTERM/SIGINT.

Once both listen, their URLs are printed and, with ``ready_file``, written there as JSON
``{"api_url": …, "gateway_url": …}`` (atomically), so a supervisor or a test started with
port 0 learns the bound ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from common.tls import write_pem
from control_plane.app import build_app
from control_plane.gateway.app import GATEWAY
from control_plane.settings import ControlPlaneSettings


def _http_url(host: str, port: int) -> str:
    host = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(
    settings: ControlPlaneSettings, *, ready_file: Path | None, echo: Callable[[str], None]
) -> None:
    """Run the replica until a termination signal, then shut down gracefully."""
    runner = web.AppRunner(build_app(settings), shutdown_timeout=10)
    await runner.setup()  # opens the control plane and starts the gateway
    try:
        site = web.TCPSite(runner, settings.bind, settings.port)
        await site.start()
        urls = {
            "api_url": _http_url(settings.bind, int(runner.addresses[0][1])),
            "gateway_url": runner.app[GATEWAY].url if GATEWAY in runner.app else None,
        }
        echo(f"control-plane API on {urls['api_url']}")
        echo(f"agent gateway on {urls['gateway_url'] or '(disabled)'}")
        if ready_file is not None:
            write_pem(ready_file, json.dumps(urls).encode() + b"\n")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        echo("shutting down")
    finally:
        await runner.cleanup()
