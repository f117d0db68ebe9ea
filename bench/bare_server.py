"""A bare aiohttp server: one handler returning fixed JSON bytes over the agent's TLS setup.

It is the floor benchmark 1 compares the agent against: same aiohttp, same ``server_context``
(TLS 1.3 only, client certificate required, same certificates), same ``TCPSite`` options, no
application work. Run as its own process::

    python -m bench.bare_server --tls-dir DATA/tls --body-file BODY --url-file URL

It binds 127.0.0.1 on a free port, writes ``https://127.0.0.1:PORT`` to ``--url-file`` once it
serves, and exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiohttp import web

from common.eventloop import run_event_loop
from common.tls import server_context

PATH = "/api/v1/secrets/{id}"


def build_app(body: bytes) -> web.Application:
    """An app whose only route answers with ``body`` as JSON, like the agent's read."""

    async def read(_request: web.Request) -> web.Response:
        return web.Response(
            body=body, content_type="application/json", headers={"Cache-Control": "no-store"}
        )

    app = web.Application()
    app.router.add_get(PATH, read)
    return app


async def serve(tls_dir: Path, body: bytes, url_file: Path) -> None:
    """Serve until SIGTERM/SIGINT."""
    ctx = server_context(
        tls_dir / "server.crt",
        tls_dir / "server.key",
        client_ca_file=tls_dir / "ca.crt",
        require_client_cert=True,
    )
    runner = web.AppRunner(build_app(body), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    url_file.write_text(f"https://127.0.0.1:{port}\n", encoding="utf-8")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tls-dir", type=Path, required=True, help="folder with server.crt/key, ca.crt"
    )
    parser.add_argument("--body-file", type=Path, required=True, help="the response body")
    parser.add_argument("--url-file", type=Path, required=True, help="where to write the URL")
    args = parser.parse_args()
    # The same event loop the agent runs on, so the baseline is the same setup.
    run_event_loop(serve(args.tls_dir, args.body_file.read_bytes(), args.url_file))


if __name__ == "__main__":
    main()
