"""``workers: N``: one supervising process and N serving processes on the same port.

The supervisor takes the data folder's lock (so a second ``keyvault agent run`` on the folder
is refused as ever), writes the zeroed ``workers.gen`` (agent/workers.py), reserves the port
when it is 0, and starts worker 0 — which migrates the store and runs the background services —
then the others, each a fresh interpreter (``spawn``) opening the agent with its
:class:`~agent.workers.WorkerRole` and listening with SO_REUSEPORT: the kernel spreads new
connections over them. The supervisor holds no key: it never opens the store.

It reports ready (``on_ready``, ``agent.url``, systemd) once every worker listens. SIGTERM or
SIGINT stops every worker (each drains its requests within ``shutdown_timeout``; one still
running after that and :data:`KILL_AFTER` more seconds is killed). A worker that exits on its
own is not restarted: the supervisor stops the others and fails with a non-zero exit, so the
service manager (systemd, Kubernetes) restarts the whole agent, all logs checkpointed. A
supervisor that is killed takes its workers with it (``PR_SET_PDEATHSIG``): no worker serves on
without the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from agent.assembly import DataDirLock
from agent.crypto import KeySource
from agent.errors import AgentError
from agent.hardening import harden_process, publish_file
from agent.service.notify import Notifier
from agent.settings import AgentSettings
from agent.workers import GEN_NAME, WorkerRole, create_counters

log = logging.getLogger("keyvault.agent")
WorkerMain = Callable[[AgentSettings, WorkerRole, KeySource | None, Connection, int], None]
KILL_AFTER = 5.0  # seconds past shutdown_timeout before a worker that has not stopped is killed
POLL = 0.1  # seconds between looks at the workers' liveness


class WorkerFailed(AgentError):
    """A worker process could not start or stopped on its own."""


async def supervise(
    settings: AgentSettings,
    *,
    source: KeySource | None = None,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    target: WorkerMain,
) -> None:
    """Run ``settings.workers`` serving processes, each ``target(settings, role, source,
    conn, supervisor pid)`` in a fresh interpreter, until SIGTERM/SIGINT (or ``stop``)."""
    harden_process()
    stop = stop or asyncio.Event()
    notifier = Notifier()
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    placeholder: socket.socket | None = None
    workers: list[tuple[BaseProcess, Connection]] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        create_counters(settings.data_dir, settings.workers)
        if settings.port == 0:  # one port for all: bound here (not listening), shared by all
            placeholder = _reserve(settings.bind)
            settings = settings.model_copy(update={"port": placeholder.getsockname()[1]})
        notifier.status(f"starting {settings.workers} worker processes")
        ctx = multiprocessing.get_context("spawn")
        url = ""
        for index in range(settings.workers):  # worker 0 first: it migrates the store
            role = WorkerRole(index, settings.workers)
            workers.append(_start(ctx, target, settings, role, source))
            url = await _ready(index, *workers[index], stop)
            if stop.is_set():
                return
        publish_file(settings.data_dir / "agent.url", url + "\n")
        log.info("agent serving on %s with %d worker processes", url, settings.workers)
        if on_ready:
            on_ready(url)
        notifier.ready(f"serving on {url} with {settings.workers} worker processes")
        watchdog = notifier.start_watchdog()
        try:
            await _watch(workers, stop)
        finally:
            notifier.stopping()
            await notifier.stop_watchdog(watchdog)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
        await _stop_all(workers, settings.shutdown_timeout + KILL_AFTER)
        (settings.data_dir / "agent.url").unlink(missing_ok=True)
        (settings.data_dir / GEN_NAME).unlink(missing_ok=True)
        if placeholder is not None:
            placeholder.close()
        lock.release()
        log.info("agent stopped")


def _reserve(bind: str) -> socket.socket:
    """A socket bound to a free port with SO_REUSEPORT, not listening (so it takes no
    connection): it keeps the port for the workers."""
    family, kind, proto, _, addr = socket.getaddrinfo(bind, 0, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(addr)
    return sock


def _start(
    ctx: multiprocessing.context.SpawnContext,
    target: WorkerMain,
    settings: AgentSettings,
    role: WorkerRole,
    source: KeySource | None,
) -> tuple[BaseProcess, Connection]:
    theirs, ours = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=target,
        args=(settings, role, source, ours, os.getpid()),
        name=f"keyvault-agent-w{role.index}",
        daemon=False,
    )
    proc.start()
    ours.close()
    return proc, theirs


async def _ready(index: int, proc: BaseProcess, conn: Connection, stop: asyncio.Event) -> str:
    """Wait for worker ``index`` to listen; its URL, or WorkerFailed with its reason."""
    while not stop.is_set():
        if conn.poll():
            try:
                kind, text = conn.recv()
            except EOFError:
                kind, text = "error", ""
            if kind == "ready":
                return str(text)
            raise WorkerFailed(f"worker {index} could not start: {text or 'see the log above'}")
        if not proc.is_alive():
            raise WorkerFailed(
                f"worker {index} exited while starting (exit code {proc.exitcode}); "
                "see the log above"
            )
        await asyncio.sleep(POLL / 2)
    return ""


async def _watch(workers: list[tuple[BaseProcess, Connection]], stop: asyncio.Event) -> None:
    """Until ``stop``: a worker that exits on its own fails the agent (no restart)."""
    while not stop.is_set():
        for index, (proc, _) in enumerate(workers):
            if not proc.is_alive():
                log.error(
                    "worker %d exited on its own (exit code %s); stopping the others",
                    index,
                    proc.exitcode,
                )
                raise WorkerFailed(
                    f"worker process {index} stopped unexpectedly (exit code {proc.exitcode}); "
                    "the agent stopped every worker: see the log above, then start it again"
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL)


async def _stop_all(workers: list[tuple[BaseProcess, Connection]], budget: float) -> None:
    """SIGTERM every live worker, wait up to ``budget`` seconds, then kill what is left."""
    for proc, _ in workers:
        if proc.is_alive() and proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    deadline = asyncio.get_running_loop().time() + budget
    while any(p.is_alive() for p, _ in workers):
        if asyncio.get_running_loop().time() > deadline:
            for proc, _ in workers:
                if proc.is_alive():
                    log.error("worker %s did not stop in time; killing it", proc.name)
                    proc.kill()
            break
        await asyncio.sleep(POLL / 2)
    for proc, conn in workers:
        proc.join(timeout=1)
        conn.close()
