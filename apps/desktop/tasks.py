"""Run view-model coroutines on the qasync loop, tied to the lifetime of a Qt object."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from PySide6.QtCore import QObject

from common.errors import KeyVaultError

T = TypeVar("T")
ErrorSink = Callable[[KeyVaultError], object]

log = logging.getLogger(__name__)

_default_sink: ErrorSink | None = None


def set_default_failed(sink: ErrorSink | None) -> None:
    """Set where errors go when a caller gives no ``failed`` (the main window's message bar)."""
    global _default_sink
    _default_sink = sink


class _TaskKeeper(QObject):
    """A child of the owner that holds its running tasks and cancels them with it."""

    NAME = "_kv_task_keeper"

    def __init__(self, owner: QObject) -> None:
        super().__init__(owner)
        self.setObjectName(self.NAME)
        self.tasks: set[asyncio.Task[Any]] = set()
        tasks = self.tasks  # the closure must not touch the dying C++ object
        owner.destroyed.connect(lambda *_: [t.cancel() for t in list(tasks)])


def _keeper(owner: QObject) -> _TaskKeeper:
    """The owner's task keeper, created on first use."""
    found = owner.findChild(_TaskKeeper, _TaskKeeper.NAME)
    return found if isinstance(found, _TaskKeeper) else _TaskKeeper(owner)


def _sink_for(owner: QObject) -> ErrorSink | None:
    """The nearest ancestor's ``show_error``, else the default sink."""
    node: QObject | None = owner
    while node is not None:
        show = getattr(node, "show_error", None)
        if callable(show):
            return show
        node = node.parent()
    return _default_sink


def _loop() -> asyncio.AbstractEventLoop:
    """The running loop, or the one set for this thread (qasync's)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.get_event_loop_policy().get_event_loop()


def run_task(
    owner: QObject,
    coro: Coroutine[Any, Any, T],
    *,
    done: Callable[[T], object] | None = None,
    failed: ErrorSink | None = None,
) -> asyncio.Task[T]:
    """Schedule ``coro``; ``done(result)`` on success, ``failed(error)`` on a KeyVaultError.

    The task is cancelled when ``owner`` is destroyed. Without ``failed`` the error goes to the
    nearest ancestor's ``show_error`` (the main window's message bar) or the default sink.
    """
    keeper = _keeper(owner)
    task = _loop().create_task(coro)
    keeper.tasks.add(task)
    sink = failed

    def finished(t: asyncio.Task[T]) -> None:
        keeper.tasks.discard(t)
        if t.cancelled():
            return
        exc = t.exception()
        if exc is None:
            if done is not None:
                done(t.result())
            return
        error = exc if isinstance(exc, KeyVaultError) else _unexpected(exc)
        target = sink or _safe_sink(owner)
        if target is None:
            log.warning("unreported error: %s", error.message)
        else:
            target(error)

    task.add_done_callback(finished)
    return task


def _safe_sink(owner: QObject) -> ErrorSink | None:
    """``_sink_for`` that tolerates an owner whose C++ side is already gone."""
    try:
        return _sink_for(owner)
    except RuntimeError:
        return _default_sink


def _unexpected(exc: BaseException) -> KeyVaultError:
    """A one-line error for a bug, logged with its traceback for the developer."""
    log.error("unexpected error in a desktop task", exc_info=exc)
    return KeyVaultError(f"something went wrong ({type(exc).__name__}); see the log")
