"""Running the agent as a daemon: single instance, TLS, graceful SIGTERM, bounded shutdown.

Under systemd (``Type=notify``) it reports start-up, readiness and shutdown and pets the
watchdog from the event loop (:mod:`agent.service.notify`). With ``workers: N`` it hands over to
:mod:`agent.supervise`, which runs :func:`worker_main` N times.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from agent.api import fastread
from agent.api.app import build_app
from agent.assembly import Agent, DataDirLock
from agent.crypto import KeySource
from agent.hardening import harden_process, make_private, publish_file
from agent.service.notify import Notifier
from agent.settings import AgentSettings
from agent.workers import WorkerRole
from common.errors import ConfigError, KeyVaultError
from common.tls import server_context
from serverkit.runner import EdgeRunner

if TYPE_CHECKING:  # a worker's pipe; multiprocessing is not imported by one process
    from multiprocessing.connection import Connection

log = logging.getLogger("keyvault.agent")


async def serve(
    settings: AgentSettings,
    *,
    source: KeySource | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Lock the data folder, open the agent, serve until SIGTERM/SIGINT (or ``stop``), then close.

    With ``workers`` above 1 this process only supervises that many serving processes
    (agent/supervise.py)."""
    if settings.workers > 1:
        from agent.supervise import supervise

        await supervise(settings, source=source, on_ready=on_ready, stop=stop, target=worker_main)
        return
    harden_process()
    notifier = Notifier()
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    try:
        notifier.status("opening the store and the keys")
        agent = await asyncio.to_thread(Agent.open, settings, source)
        db = settings.data_dir / "store.db"
        make_private(db, db.with_name("store.db-wal"), db.with_name("store.db-shm"))
        try:
            await _serve(agent, on_ready, stop or asyncio.Event(), notifier)
        finally:
            await asyncio.to_thread(agent.close)
    finally:
        lock.release()


async def _serve(
    agent: Agent,
    on_ready: Callable[[str], None] | None,
    stop: asyncio.Event,
    notifier: Notifier,
    *,
    worker: bool = False,
) -> None:
    """Serve ``agent`` until ``stop``; a ``worker`` shares its port (SO_REUSEPORT) and leaves
    ``agent.url`` to its supervisor."""
    settings = agent.settings
    ssl_ctx = None
    _log_client_cert_choice(settings)
    if settings.tls.enabled:
        ssl_ctx = server_context(
            settings.cert_path,
            settings.key_path,
            client_ca_file=settings.client_ca_path if settings.tls.client_cert != "none" else None,
            require_client_cert=settings.tls.client_cert == "required",
        )
    app = build_app(agent, background=True)  # the uplink and scheduler start with the app
    runner = EdgeRunner(
        app,
        front=fastread.front(agent, app),  # the hot read, ahead of the router
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout,
    )
    try:
        await runner.setup()
    except BaseException:
        await runner.cleanup()
        raise
    site = web.TCPSite(
        runner,
        settings.bind,
        settings.port,
        ssl_context=ssl_ctx,
        backlog=1024,
        reuse_port=True if worker else None,
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise _listen_error(settings, exc) from None
    port = _bound_port(site, settings.port)
    url = settings.model_copy(update={"port": port}).base_url
    # What start-up built lives as long as the process: collect once, then keep it out of
    # every later collection (each request's garbage is young; a full collection no longer
    # walks the whole heap). docs/performance.md, issue 18 round 3.
    gc.collect()
    gc.freeze()
    if not worker:
        _write_url(settings.data_dir, url)
    loop = asyncio.get_running_loop()
    log.debug(
        "event loop %s; client certificates %s; audit fsync %s; store %s",
        type(loop).__module__,
        settings.tls.client_cert if settings.tls.enabled else "n/a (no TLS)",
        settings.audit_fsync,
        agent.store.safe_url,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        # not on Windows, nor off the main thread (a Windows service host stops it another way)
        with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    log.info(
        "agent %s serving vault %s on %s (%s store)",
        agent.version,
        agent.keys.vault_id,
        url,
        agent.store.backend,
    )
    if on_ready:
        on_ready(url)
    notifier.ready(f"serving vault {agent.keys.vault_id} on {url}")
    watchdog = notifier.start_watchdog()
    try:
        await stop.wait()
    finally:
        notifier.stopping()
        log.info(
            "shutting down: finishing in-flight requests (at most %ss)", settings.shutdown_timeout
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
        deadline = loop.time() + settings.shutdown_timeout
        await runner.cleanup()  # requests drain while the uplink and scheduler stop
        await agent.jobs.drain(max(0.1, deadline - loop.time()))
        if not worker:
            (settings.data_dir / "agent.url").unlink(missing_ok=True)
        await notifier.stop_watchdog(watchdog)
        log.info("agent stopped")


def _log_client_cert_choice(settings: AgentSettings) -> None:
    if settings.tls.enabled and settings.tls.client_cert != "required":
        log.warning(
            "client certificates are %s (tls.client_cert): a bearer token alone reaches "
            "secrets on this agent; set tls.client_cert: required for mutual TLS",
            settings.tls.client_cert,
        )


def _listen_error(settings: AgentSettings, exc: OSError) -> ConfigError:
    """One line for a port that cannot be bound (in use, or not ours to take)."""
    where = f"{settings.bind}:{settings.port}"
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"cannot listen on {where}: the port is already in use; stop what holds it "
            "or choose another with --port (or port in agent.yaml)"
        )
    return ConfigError(f"cannot listen on {where}: {exc.strerror or exc}; check bind and port")


def _bound_port(site: web.TCPSite, wanted: int) -> int:
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else wanted


def _write_url(data_dir: Path, url: str) -> None:
    publish_file(data_dir / "agent.url", url + "\n")


# --------------------------------------------------------------- one of several workers


def worker_main(
    settings: AgentSettings,
    role: WorkerRole,
    source: KeySource | None,
    conn: Connection,
    parent: int,
) -> None:
    """A worker process: open the agent as ``role`` and serve until SIGTERM (spawn target);
    it gets SIGTERM too if the supervisor ``parent`` dies, however it dies."""
    from agent import platform
    from agent.logs import setup_logging
    from common.eventloop import run_event_loop

    platform.die_with_parent(parent)

    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):  # systemd hears the parent
        os.environ.pop(name, None)
    setup_logging(settings.log_level, settings.log_format)
    try:
        run_event_loop(_serve_worker(settings, role, source, conn))
    except KeyVaultError as exc:
        _tell(conn, ("error", exc.message))
        log.error("worker %d: %s", role.index, exc.message)
        raise SystemExit(1) from None
    except Exception:
        _tell(conn, ("error", "unexpected error"))
        log.exception("worker %d failed", role.index)
        raise SystemExit(1) from None
    finally:
        conn.close()


def _tell(conn: Connection, message: tuple[str, str]) -> None:
    with contextlib.suppress(OSError, ValueError):
        conn.send(message)


async def _serve_worker(
    settings: AgentSettings, role: WorkerRole, source: KeySource | None, conn: Connection
) -> None:
    harden_process()
    agent = await asyncio.to_thread(Agent.open, settings, source, role)
    try:
        await _serve(
            agent,
            lambda url: _tell(conn, ("ready", url)),
            asyncio.Event(),
            Notifier(),
            worker=True,
        )
    finally:
        await asyncio.to_thread(agent.close)
