"""The template service: render every configured template at start, re-render after a change.

How a change is found: a :class:`ChangeSource` yields whenever secrets may have changed (today,
:class:`FeedChanges` over the :class:`~agent.changes.ChangeFeed` every write already notifies;
it cannot say which secret, so it yields ``None``). The service then re-reads, in one query, the
current version of every secret the templates used in their last render, and re-renders only
the templates whose secrets moved (or appeared, or went away). A template renders at most once
per ``min_interval_ms``; changes inside that window are folded into one render at its end. Up to
``PARALLEL`` templates render at once; one template never renders twice at the same time, so
its reload runs once per replaced file, in order.

A render reads values from the agent's own :class:`~agent.secrets.SecretService` (audited as
``secrets.read`` by the actor ``template:<name>``), runs in a worker thread inside the sandbox
(``sandbox.py``), and replaces the file atomically only when its content changed (``files.py``);
then the reload command runs once, or the process is signalled. A failure of any step keeps the
last good file, logs what is wrong (never a value), and raises one ``template_failed`` alert
upstream (an index and a reason code: no name, no path); the next good render says so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Protocol

import jinja2

from agent.background import Background
from agent.changes import ChangeFeed, Wakeup
from agent.platform import kill_group
from agent.store.sql import Connection, placeholders
from agent.templates import files, sandbox
from agent.templates.sandbox import TemplateFailure
from common.errors import ConfigError, NotFoundError, UnavailableError, ValidationError

if TYPE_CHECKING:
    from agent.assembly import Agent
    from agent.settings import TemplateSpec

log = logging.getLogger("keyvault.agent.templates")
ALERT_KIND = "template_failed"
LOOKUP_TIMEOUT = 10.0  # seconds one secret read may take from the render thread
IDLE = 3600.0
PARALLEL = 4  # templates rendered (and written) at once
_CHUNK = 500  # names per version query


class ChangeSource(Protocol):
    """Where the service learns that secrets may have changed."""

    def changes(self) -> AsyncIterator[frozenset[str] | None]:
        """Yield after each batch of changes: the names that changed, or ``None`` when the
        source cannot tell (the service then checks every name it uses)."""
        ...


class FeedChanges:
    """A :class:`ChangeSource` over today's :class:`ChangeFeed`: every committed write wakes it."""

    def __init__(self, feed: ChangeFeed) -> None:
        self.feed = feed

    async def changes(self) -> AsyncIterator[frozenset[str] | None]:
        """``None`` after each burst of commits (bursts fold into one)."""
        wake = Wakeup()
        wake.clear()
        stop = self.feed.listen(wake.notify)
        try:
            while True:
                await wake.wait(IDLE)  # an idle hour ends in one spare (cheap) check
                wake.clear()
                yield None
        finally:
            stop()


@dataclass
class _Template:
    """One configured template and what its last render found."""

    index: int
    spec: TemplateSpec
    template: jinja2.Template
    uid: int
    gid: int
    used: dict[str, tuple[str, int] | None] = field(default_factory=dict)
    digest: bytes | None = None  # of the file the service last wrote or found current
    last_render: float = float("-inf")
    dirty: bool = True
    failing: str | None = None  # the reason code while the last attempt failed
    busy: bool = False  # a render (with its write and reload) is under way
    recheck: bool = False  # secrets changed while it was busy: compare versions afterwards
    alerted_at: float = float("-inf")

    @property
    def name(self) -> str:
        return self.spec.label


def load_templates(agent: Agent) -> list[_Template]:
    """Read and compile every configured template; a bad one stops the start (``ConfigError``
    naming the template and the fix)."""
    limits = agent.settings.template_limits
    env = sandbox.environment()
    out = []
    for index, spec in enumerate(agent.settings.templates):
        where = f"templates[{index}] ({spec.label})"
        text = spec.inline
        if spec.source is not None:
            try:
                raw = spec.source.read_bytes()
            except OSError as exc:
                raise ConfigError(
                    f"{where}: cannot read source {spec.source}: {exc.strerror}"
                ) from None
            if len(raw) > limits.max_source_bytes:
                raise ConfigError(f"{where}: source is larger than {limits.max_source_bytes} bytes")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{where}: source {spec.source} is not UTF-8 text") from None
        assert text is not None
        if len(text.encode()) > limits.max_source_bytes:
            raise ConfigError(f"{where}: template is larger than {limits.max_source_bytes} bytes")
        if not spec.destination.parent.is_dir():
            raise ConfigError(
                f"{where}: the destination's folder {spec.destination.parent} does not exist; "
                "create it or change destination"
            )
        try:
            template = sandbox.compile_template(env, text)
        except TemplateFailure as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
        uid, gid = files.ids(spec.owner, spec.group)
        out.append(_Template(index, spec, template, uid, gid))
    return out


class Templates(Background):
    """Renders the agent's templates and keeps them following the secrets they use."""

    task_name = "templates"

    def __init__(self, agent: Agent, source: ChangeSource | None = None) -> None:
        super().__init__()
        self.agent = agent
        self.limits = agent.settings.template_limits
        self.items = load_templates(agent)
        self.source = source or FeedChanges(agent.secrets.feed)
        self.renders = 0  # successful renders that replaced a file
        self.failures = 0
        self._kick = Wakeup()
        self._pool: ThreadPoolExecutor | None = None
        self._slots = asyncio.Semaphore(PARALLEL)
        self._running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Render everything, then follow changes until stopped; never raises."""
        if not self.items:
            return
        self._pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="kv-template")
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(self._watch(), name="templates-watch")
        try:
            while not self._stopping.is_set():
                self._kick.clear()
                wait = self._start_due()
                stop = loop.create_task(self._stopping.wait())
                kick = loop.create_task(self._kick.wait(wait))
                await asyncio.wait({stop, kick}, return_when=asyncio.FIRST_COMPLETED)
                for task in (stop, kick):
                    task.cancel()
        finally:
            watcher.cancel()
            for task in list(self._running):
                task.cancel()
            await asyncio.gather(watcher, *self._running, return_exceptions=True)
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _watch(self) -> None:
        async for changed in self.source.changes():
            try:
                await self._mark_changed(changed)
            except Exception:  # the store is briefly unavailable: the next change checks again
                log.exception("templates: checking secret versions failed")
            self._kick.notify()

    async def _mark_changed(self, changed: frozenset[str] | None) -> None:
        """Mark dirty each template whose secrets' versions differ from its last render; a
        template rendering right now is checked again when its render ends."""
        for item in self.items:
            item.recheck = item.recheck or item.busy
        names = {n for item in self.items if not item.busy for n in item.used}
        if changed is not None:
            names &= changed
        if not names:
            return
        now = await self.agent.store.read(partial(_versions, sorted(names)))
        for item in self.items:
            if not (item.busy or item.dirty) and _moved(item.used, now, names):
                item.dirty = True

    async def _recheck(self, item: _Template) -> None:
        """After a render during which secrets changed: render again if its own moved."""
        while item.recheck and item.used:
            item.recheck = False
            now = await self.agent.store.read(partial(_versions, sorted(item.used)))
            if _moved(item.used, now, set(item.used)):
                item.dirty = True
                return
        item.recheck = False

    def _start_due(self) -> float:
        """Start a render of every dirty template whose interval has passed and that is not
        rendering already (at most ``PARALLEL`` run at once); seconds until the next is due."""
        wait = IDLE
        for item in self.items:
            if not item.dirty or item.busy:
                continue
            due = item.last_render + item.spec.min_interval_ms / 1000
            now = time.monotonic()
            if now < due:
                wait = min(wait, due - now)
                continue
            item.dirty, item.busy, item.last_render = False, True, now
            task = asyncio.get_running_loop().create_task(self._one(item))
            self._running.add(task)
        return wait

    async def _one(self, item: _Template) -> None:
        try:
            async with self._slots:
                await self.render(item)
            await self._recheck(item)
        except Exception:  # a bug must not stop the other templates
            log.exception("template %s: render failed unexpectedly", item.name)
        finally:
            item.busy = False
            self._running.discard(asyncio.current_task())
            self._kick.notify()

    async def render(self, item: _Template) -> bool:
        """One render of one template, then its write and reload; whether the file changed."""
        reads = sandbox.Reads()
        try:
            try:
                data = await self._render(item, reads)
            finally:  # every value read is audited, before any of it reaches the file
                self._audit_reads(item, reads)
            changed = await self._write(item, data)
        except TemplateFailure as exc:
            item.used = reads.used
            await self._failed(item, exc.reason, exc.message)
            return False
        item.used = reads.used
        if item.failing is not None:
            log.info("template %s rendered again; %s is current", item.name, item.spec.destination)
            item.failing = None
        if changed:
            self.renders += 1
            log.info("template %s: %s replaced", item.name, item.spec.destination)
            await self._reload(item, reads)
        return changed

    async def _render(self, item: _Template, reads: sandbox.Reads) -> bytes:
        loop = asyncio.get_running_loop()

        def lookup(name: str) -> tuple[str, int, str] | None:
            future = asyncio.run_coroutine_threadsafe(self._reveal(name), loop)
            return future.result(LOOKUP_TIMEOUT)

        job = partial(
            sandbox.render,
            item.template,
            lookup,
            reads,
            max_bytes=self.limits.max_rendered_bytes,
            budget=self.limits.render_budget_seconds,
            error_on_missing=item.spec.error_on_missing,
        )
        try:
            return await loop.run_in_executor(self._pool, job)
        except TemplateFailure:
            raise
        except Exception as exc:  # the store failed under a read: not the template's fault
            raise TemplateFailure(
                sandbox.TEMPLATE_ERROR, f"reading a secret failed ({type(exc).__name__})"
            ) from None

    async def _reveal(self, name: str) -> tuple[str, int, str] | None:
        try:
            meta, version, value = await self.agent.secrets.reveal(name)
        except (NotFoundError, ValidationError):
            return None
        return meta.id, version, value

    async def _write(self, item: _Template, data: bytes) -> bool:
        """Replace the file when its content differs; whether it did."""
        spec = item.spec
        new = files.digest(data)
        loop = asyncio.get_running_loop()
        try:
            if item.digest is None:
                item.digest = await loop.run_in_executor(
                    self._pool, files.current_digest, spec.destination
                )
            if new == item.digest:
                await loop.run_in_executor(
                    self._pool, files.fix_mode, spec.destination, spec.mode, item.uid, item.gid
                )
                return False
            await loop.run_in_executor(
                self._pool, files.replace, spec.destination, data, spec.mode, item.uid, item.gid
            )
        except OSError as exc:
            raise TemplateFailure(
                sandbox.WRITE_ERROR,
                f"cannot write {spec.destination}: {exc.strerror or type(exc).__name__}",
            ) from None
        item.digest = new
        return True

    def _audit_reads(self, item: _Template, reads: sandbox.Reads) -> None:
        """One ``secrets.read`` entry per secret the render read (or looked for).

        Fail-closed, as the API's reads are: when the audit log cannot take an entry, the render
        fails with ``audit_unavailable`` and its output is never written.
        """
        actor = f"template:{item.name}"
        for found in reads.used.values():
            ok = found is not None
            try:
                self.agent.audit.append(
                    op="secrets.read",
                    outcome="ok" if ok else "error",
                    status=200 if ok else 404,
                    actor=actor,
                    target=found[0] if found else None,
                )
            except UnavailableError:
                raise TemplateFailure(
                    sandbox.AUDIT_UNAVAILABLE,
                    "the audit log cannot be written, so the rendered file is not replaced",
                ) from None

    async def _reload(self, item: _Template, reads: sandbox.Reads) -> None:
        action = item.spec.on_change
        if action is None:
            return
        try:
            if action.command is not None:
                await _run_command(action.command, action.timeout_seconds, reads, item.name)
            elif action.signal is not None:
                _send_signal(action.signal.pid_file, action.signal.signal)
                log.info("template %s: sent %s", item.name, action.signal.signal)
        except TemplateFailure as exc:
            await self._failed(item, exc.reason, exc.message, keep_state=True)

    async def _failed(
        self, item: _Template, reason: str, message: str, *, keep_state: bool = False
    ) -> None:
        """Log, count and (once per failure, at most once a minute) alert upstream."""
        self.failures += 1
        log.error(
            "template %s: %s; %s keeps its last good content",
            item.name,
            message,
            item.spec.destination,
        )
        first = item.failing != reason
        if not keep_state:
            item.failing = reason
        now = time.monotonic()
        if first and now - item.alerted_at >= 60:
            item.alerted_at = now
            await self._alert(item, reason)

    async def _alert(self, item: _Template, reason: str) -> None:
        """A ``template_failed`` alert through the uplink's outbox (enrolled agents only)."""
        feed = self.agent.secrets.feed
        if not feed.tracking:
            return
        from agent.uplink import outbox

        alert = {
            "kind": ALERT_KIND,
            "message": f"template #{item.index + 1} failed ({reason}); the last good file is kept",
        }
        stamp = datetime.now(UTC).isoformat()
        try:
            await self.agent.store.write(lambda c: outbox.enqueue(c, outbox.ALERT, alert, stamp))
        except Exception:
            log.exception("templates: queueing the alert failed")
            return
        feed.committed()


def _moved(
    used: dict[str, tuple[str, int] | None], now: dict[str, tuple[str, int]], names: set[str]
) -> bool:
    """Whether any of ``names`` a render used is now at another version (or appeared, or
    went away)."""
    return any(now.get(n) != seen for n, seen in used.items() if n in names)


def _versions(names: list[str], conn: Connection) -> dict[str, tuple[str, int]]:
    """name → (id, current version) of the live secrets among ``names``."""
    out: dict[str, tuple[str, int]] = {}
    for start in range(0, len(names), _CHUNK):
        chunk = names[start : start + _CHUNK]
        rows = conn.execute(
            "SELECT id, name, current_version FROM kv_secrets "  # noqa: S608
            f"WHERE name IN ({placeholders(len(chunk))}) AND deleted_at IS NULL",
            chunk,
        ).fetchall()
        out.update({name: (sid, int(version)) for sid, name, version in rows})
    return out


async def _run_command(argv: list[str], timeout: float, reads: sandbox.Reads, name: str) -> None:
    """Run the reload command once (no shell, own process group, killed after ``timeout``)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise TemplateFailure(
            sandbox.RELOAD_FAILED, f"cannot run {argv[0]}: {exc.strerror}"
        ) from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        kill_group(proc.pid)
        await proc.wait()
        raise TemplateFailure(
            sandbox.RELOAD_FAILED, f"{argv[0]} did not finish within {timeout} s (killed)"
        ) from None
    text = reads.redact(out.decode(errors="replace").strip())
    if proc.returncode != 0:
        raise TemplateFailure(
            sandbox.RELOAD_FAILED, f"{argv[0]} exited with {proc.returncode}: {text}"
        )
    log.info("template %s: ran %s%s", name, argv[0], f": {text}" if text else "")


def _send_signal(pid_file: os.PathLike[str], name: str) -> None:
    try:
        with open(pid_file) as fh:
            pid = int(fh.read().strip())
        os.kill(pid, signal.Signals[name])
    except (OSError, ValueError) as exc:
        raise TemplateFailure(
            sandbox.RELOAD_FAILED, f"cannot send {name} to the pid in {pid_file}: {exc}"
        ) from None
