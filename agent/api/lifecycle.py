"""The agent's background services (uplink, rotation scheduler, audit checkpoints, webhooks,
templates) in the aiohttp app's lifecycle.

They start in ``cleanup_ctx`` while the app starts, before the listener accepts a request (so
no write escapes the uplink's change tracking), and stop when the app shuts down: the stop
begins in ``on_shutdown``, alongside the draining of in-flight requests, and ``cleanup_ctx``
waits for it before the agent closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from agent.assembly import Agent
from agent.audit.checkpoint import Checkpointer
from agent.rotation.scheduler import Scheduler
from agent.uplink.service import Uplink
from agent.webhooks import WebhookSender

if TYPE_CHECKING:
    from agent.templates.service import Templates

STOP_BUDGET = 5.0  # seconds each service gets to stop before it is cancelled


@dataclass
class Services:
    """The running background services of one agent."""

    uplink: Uplink | None  # None on a worker process after the first (agent/workers.py)
    scheduler: Scheduler | None
    checkpoints: Checkpointer
    timeout: float
    webhooks: WebhookSender | None = None
    templates: Templates | None = None
    _stopping: asyncio.Task[None] | None = field(default=None, repr=False)

    def start(self) -> None:
        """Start every service on the running loop."""
        if self.uplink is not None:
            self.uplink.start()
        self.checkpoints.start()
        if self.webhooks is not None:
            self.webhooks.start()
        if self.scheduler is not None:
            self.scheduler.start()
        if self.templates is not None:
            self.templates.start()

    def begin_stop(self) -> None:
        """Start stopping every service (at once, in parallel); idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop())

    async def stopped(self) -> None:
        """Stop every service (if not yet begun) and wait until they have."""
        self.begin_stop()
        assert self._stopping is not None
        await self._stopping

    async def _stop(self) -> None:
        parts = [self.checkpoints.stop(self.timeout)]
        if self.uplink is not None:
            parts.append(self.uplink.stop(self.timeout))
        if self.scheduler is not None:
            parts.append(self.scheduler.stop(self.timeout))
        if self.webhooks is not None:
            parts.append(self.webhooks.stop(self.timeout))
        if self.templates is not None:
            parts.append(self.templates.stop(self.timeout))
        await asyncio.gather(*parts)


SERVICES = web.AppKey("services", Services)


def open_services(agent: Agent) -> Services:
    """The uplink (prepared: a bad metadata key stops the start here), the scheduler, the
    audit checkpoints and the templates (compiled: a bad template stops the start here).

    A worker process after the first keeps only its own audit log's checkpoints: the others
    run once, on worker 0."""
    checkpoints = Checkpointer(agent.audit_guard, agent.audit, agent.store)
    timeout = min(STOP_BUDGET, agent.settings.shutdown_timeout)
    if agent.worker is not None and not agent.worker.runs_services:
        return Services(None, None, checkpoints, timeout)
    uplink = Uplink(agent)
    uplink.prepare()
    scheduler = None
    if agent.rotation is not None:
        scheduler = Scheduler(agent.rotation, policies_version=lambda: uplink.policies_version)
    templates = None
    if agent.settings.templates:  # Jinja2 is imported only by an agent that renders templates
        from agent.templates.service import Templates

        templates = Templates(agent)
    webhooks = None
    if agent.settings.webhooks:  # a missing signing secret stops the start here
        webhooks = WebhookSender(agent.settings.webhooks, agent.secrets.feed, agent.keys.vault_id)
    return Services(uplink, scheduler, checkpoints, timeout, webhooks, templates)


def add_background_services(app: web.Application, agent: Agent) -> None:
    """Run the agent's background services for as long as ``app`` runs."""

    async def services(app: web.Application) -> AsyncIterator[None]:
        running = open_services(agent)
        app[SERVICES] = running
        running.start()
        try:
            yield
        finally:
            await running.stopped()

    async def begin_stop(app: web.Application) -> None:
        if SERVICES in app:
            app[SERVICES].begin_stop()

    app.cleanup_ctx.append(services)
    app.on_shutdown.append(begin_stop)
