"""Webhooks on change: a signed notice POSTed to each configured URL when a secret changes.

The sender follows the agent's :class:`~agent.changes.ChangeFeed` (so writers never wait on a
delivery) and keeps one bounded queue and one delivery task per URL. A notice is
``{"event", "name", "id", "version", "vault", "at"}``, never a value, signed as
:mod:`common.webhooks` describes (each attempt signed afresh). A failed delivery is retried
with exponential backoff, then dropped and logged by secret id and the URL's host only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agent.background import Background
from agent.changes import ChangeFeed, SecretChange
from agent.globmatch import GlobSet
from agent.settings import WebhookSettings
from common.errors import ConfigError
from common.webhooks import sign

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("keyvault.agent.webhooks")

QUEUE_CAP = 1000  # notices waiting for one URL before the oldest are dropped
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
MAX_SECRET_BYTES = 4096


def load_secret(hook: WebhookSettings) -> bytes:
    """The signing secret of ``hook`` (from its variable or file), or a ConfigError."""
    if hook.secret_env is not None:
        value = os.environ.get(hook.secret_env, "")
        if not value:
            raise ConfigError(
                f"webhook to {_where(hook.url)}: environment variable {hook.secret_env} is empty "
                "or unset; set it to the signing secret"
            )
        return value.encode()
    assert hook.secret_file is not None
    try:
        raw = hook.secret_file.read_bytes()[: MAX_SECRET_BYTES + 1].strip()
    except OSError as exc:
        raise ConfigError(
            f"webhook to {_where(hook.url)}: cannot read secret_file {hook.secret_file} "
            f"({exc.strerror})"
        ) from None
    if not raw or len(raw) > MAX_SECRET_BYTES:
        raise ConfigError(
            f"webhook to {_where(hook.url)}: secret_file {hook.secret_file} must hold "
            f"1-{MAX_SECRET_BYTES} bytes"
        )
    return raw


def _where(url: str) -> str:
    """The URL's scheme, host and port: what logs name (never a path or query that may hold a
    credential)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


@dataclass
class Target:
    """One webhook: its settings, secret, name globs and queue of notices."""

    hook: WebhookSettings
    secret: bytes = field(repr=False)
    names: GlobSet
    queue: asyncio.Queue[tuple[str, bytes]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_CAP)
    )
    dropped: int = 0

    def offer(self, secret_id: str, body: bytes) -> None:
        """Queue a notice; when full, drop the oldest (never wait)."""
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait((secret_id, body))


def notice(change: SecretChange, vault: str) -> bytes:
    """The JSON body of one notice."""
    doc = {**change.to_json(), "vault": vault, "at": datetime.now(UTC).isoformat()}
    return json.dumps(doc, separators=(",", ":")).encode()


class WebhookSender(Background):
    """Delivers change notices to every configured webhook, off the request path."""

    task_name = "webhooks"

    def __init__(self, hooks: list[WebhookSettings], feed: ChangeFeed, vault: str) -> None:
        super().__init__()
        self.targets = [Target(h, load_secret(h), GlobSet(h.names)) for h in hooks]
        self.feed = feed
        self.vault = vault
        self.delivered = 0
        self.failed = 0

    async def run(self) -> None:
        """Follow the feed until stopped."""
        if not self.targets:
            return
        sub = self.feed.subscribe()
        loop = asyncio.get_running_loop()
        workers = [loop.create_task(self._worker(t)) for t in self.targets]
        stopping = loop.create_task(self._stopping.wait())
        try:
            while True:
                getting = loop.create_task(sub.get())
                done, _ = await asyncio.wait({getting, stopping}, return_when="FIRST_COMPLETED")
                if getting not in done:
                    getting.cancel()
                    break
                change = getting.result()
                if change is None:
                    break
                if change.event == "resync":
                    log.warning("webhooks fell behind the change feed; some notices were lost")
                    continue
                body = notice(change, self.vault)
                for target in self.targets:
                    if target.names.which(change.name):
                        target.offer(change.id, body)
        finally:
            sub.close()
            stopping.cancel()
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, target: Target) -> None:
        import httpx  # only an agent with webhooks loads the HTTP client

        async with httpx.AsyncClient(timeout=target.hook.timeout_s, follow_redirects=False) as http:
            while True:
                secret_id, body = await target.queue.get()
                await self._deliver(http, target, secret_id, body)

    async def _deliver(
        self, http: httpx.AsyncClient, target: Target, secret_id: str, body: bytes
    ) -> None:
        import httpx

        attempts = target.hook.retries + 1
        why = ""
        for attempt in range(attempts):
            headers = {"Content-Type": "application/json", **sign(target.secret, body)}
            try:
                async with http.stream("POST", target.hook.url, content=body, headers=headers) as r:
                    if r.status_code < 300:
                        self.delivered += 1
                        return
                    why = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            if attempt + 1 < attempts:
                delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
        self.failed += 1
        log.warning(
            "webhook %s: notice for %s not delivered after %d attempts (%s)",
            _where(target.hook.url),
            secret_id,
            attempts,
            why,
        )
