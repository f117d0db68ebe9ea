"""Fixtures for desktop-app tests (names are stable; the other views' tests use them).

How async works here: the tests are plain **sync** functions using pytest-qt's ``qtbot``.
The ``qloop`` fixture installs a ``qasync.QEventLoop(qapp, already_running=True)`` as this
thread's running asyncio loop, so :func:`apps.desktop.tasks.run_task` and the view models'
coroutines run whenever Qt processes events — i.e. inside ``qtbot.waitUntil(...)`` /
``qtbot.wait(ms)``. To await a coroutine from a test use ``drive(qtbot, coro)``. Do not write
``async def`` tests for widgets (pytest-asyncio would run them on another loop).

* ``qapp`` — pytest-qt's QApplication; ``QT_QPA_PLATFORM=offscreen`` is set when this module
  is imported, before any QApplication exists.
* ``qloop`` — the qasync loop above (closed, and unset, at teardown).
* ``fake_cp`` — :class:`tests.apps.fake_cp.FakeControlPlane` seeded with 12 vaults (the
  first with 6 secrets), 3 alerts, 2 policies, 5 audit entries and 7 days of usage.
* ``fake_shell`` — a :class:`apps.core.shell.Shell` over ``fake_cp`` with an in-memory
  credential store (names open) and a :class:`FakeStream` (``fake_shell.stream``) that reports
  "online" when the shell starts; ``.set_online(bool)`` and ``.emit(kind, data)`` drive it.
  Not started: ``MainWindow`` starts it, or call ``drive(qtbot, fake_shell.start())``.
  Closed at teardown.
* ``live_shell`` — a Shell logged in to the real ``live_cp`` as its owner (token in the real
  keyring from ``keyring_env``); not started; closed at teardown.
* ``desktop_config`` — QSettings in the test's temp folder (``fake_shell`` also points
  ``XDG_CONFIG_HOME`` there; ``keyring_env`` does for live tests).

Helpers: ``drive(qtbot, coro, timeout=10_000)`` runs a coroutine on the qasync loop and
returns its result (raises its exception).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import qasync
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from apps.core.session import Session
from apps.core.shell import Shell
from tests.apps.conftest import ORG_KEY, OWNER, PASSWORD, LiveControlPlane
from tests.apps.fake_cp import FakeControlPlane
from tests.apps.fake_shell import build_fake_shell

T = TypeVar("T")


def drive(qtbot: Any, coro: Coroutine[Any, Any, T], timeout: int = 10_000) -> T:
    """Run ``coro`` on the qasync loop while Qt processes events; its result or exception."""
    task = asyncio.get_event_loop_policy().get_event_loop().create_task(coro)
    qtbot.waitUntil(task.done, timeout=timeout)
    return task.result()


@pytest.fixture
def qloop(qapp: QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    """A qasync loop as this thread's running asyncio loop, driven by Qt event processing."""
    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        for _ in range(50):
            if all(t.done() for t in pending):
                break
            qapp.processEvents()
        # not loop.stop(): it calls QApplication.exit(), which ends every later qWait at once
        loop._QEventLoop__is_running = False
        loop.close()
        asyncio.events._set_running_loop(None)
        asyncio.set_event_loop(None)
        # collect the test's cyclic garbage here, on the GUI thread: left to chance, the
        # collector can run in a server or worker thread and delete a QObject there (a closed
        # loop's timer), which Qt cannot stop from that thread, and a later test crashes
        gc.collect()


@pytest.fixture
def desktop_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """QSettings under the test's temp folder (nothing from, or to, the real user's)."""
    config = tmp_path / "qsettings"
    config.mkdir(exist_ok=True)
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(config))
    return config


@pytest.fixture
def fake_shell(
    fake_cp: FakeControlPlane,
    qloop: asyncio.AbstractEventLoop,
    qtbot: Any,
    desktop_config: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Shell]:
    """A Shell over ``fake_cp`` (not started; closed at teardown)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(desktop_config.parent / "config"))
    shell = build_fake_shell(fake_cp)
    yield shell
    drive(qtbot, shell.close())


@pytest.fixture
def live_shell(
    live_cp: LiveControlPlane,
    keyring_env: dict[str, str],
    qloop: asyncio.AbstractEventLoop,
    qtbot: Any,
    desktop_config: Path,
) -> Iterator[Shell]:
    """A Shell logged in to the real control plane (token in the real keyring)."""
    session = Session.login(live_cp.url, OWNER, PASSWORD)
    session.store.set_metadata_key(live_cp.org_id, ORG_KEY)  # policies are sealed with it
    shell = Shell.from_session(session)
    yield shell
    drive(qtbot, shell.close())
