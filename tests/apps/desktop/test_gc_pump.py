"""The desktop app runs Python's cyclic collector only on the GUI thread (Qt objects must die on
the thread that owns them)."""

from __future__ import annotations

import gc
import threading
import weakref

from PySide6.QtCore import QObject
from pytestqt.qtbot import QtBot

from apps.desktop.app import GuiThreadCollector


class Node:
    """A reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_collections_happen_on_the_gui_thread_only(qtbot: QtBot) -> None:
    owner = QObject()
    collector = GuiThreadCollector(owner, interval_ms=20)
    threads: list[str] = []

    def record(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            threads.append(threading.current_thread().name)

    gc.callbacks.append(record)
    try:
        assert not gc.isenabled()
        probe = Node()
        gone = weakref.ref(probe)
        del probe
        worker = threading.Thread(target=lambda: [Node() for _ in range(20_000)], name="worker")
        worker.start()
        worker.join()  # lots of cyclic garbage made off the GUI thread: no collection there
        assert "worker" not in threads
        qtbot.waitUntil(lambda: gone() is None, timeout=5000)
        assert threads and set(threads) == {threading.main_thread().name}
    finally:
        gc.callbacks.remove(record)
        collector.timer.stop()
        gc.enable()
        del owner
