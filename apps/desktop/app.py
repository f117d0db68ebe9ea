"""``run_desktop``: the QApplication, the qasync loop, the login dialog, then the main window."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import QApplication

from apps.desktop import theme

if TYPE_CHECKING:
    from PySide6.QtCore import SignalInstance

    from apps.core.keyring_store import CredentialStore
    from apps.core.session import Session

MEMORY_NOTE = (
    "Memory keyring: your session token and keys are kept in memory only and forgotten when "
    "the app closes."
)


def application() -> QApplication:
    """The QApplication (created once), named, themed, and following the system's scheme."""
    from apps.desktop.main_window import settings

    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    app.setOrganizationName("KeyVault")
    app.setApplicationName("KeyVault Desktop")
    app.setQuitOnLastWindowClosed(False)  # the loop ends when the main coroutine does
    theme.apply(app, str(settings().value("theme", "system")))

    def scheme_changed(_scheme: Qt.ColorScheme) -> None:
        if str(settings().value("theme", "system")) == "system":
            theme.apply(app, "system")

    app.styleHints().colorSchemeChanged.connect(scheme_changed)
    return app


class GuiThreadCollector(QObject):
    """Python's cyclic garbage collector, run only on the GUI thread.

    Left automatic, a collection can start in any thread that allocates (an
    ``asyncio.to_thread`` keyring call, say) and delete a QObject caught in a cycle there; Qt
    cannot stop that object's timers from another thread and the app crashes later. So automatic
    collection is off and this timer collects, generation by generation, at the same thresholds.
    """

    def __init__(self, parent: QObject, interval_ms: int = 500) -> None:
        super().__init__(parent)
        self.thresholds = gc.get_threshold()
        gc.disable()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        self.timer.start(interval_ms)

    def check(self) -> None:
        """Collect the generations whose counts passed their thresholds."""
        counts = gc.get_count()
        for generation in (2, 1, 0):
            if counts[generation] > self.thresholds[generation]:
                gc.collect(generation)
                return


async def next_emit(signal: SignalInstance, owner: QObject) -> Any:
    """Wait for one emission of ``signal``; its first argument."""
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def fire(*args: Any) -> None:
        if not future.done():
            future.set_result(args[0] if args else None)

    signal.connect(fire)
    owner.destroyed.connect(lambda *_: future.done() or future.cancel())
    return await future


async def ask_login(store: CredentialStore | None, note: str | None = None) -> Session | None:
    """Show the login dialog; the new session, or None when cancelled."""
    from apps.desktop.login_dialog import LoginDialog

    dialog = LoginDialog(store, note=note)
    dialog.open()
    await next_emit(dialog.finished, dialog)
    session = dialog.session
    dialog.deleteLater()
    return session


async def desktop_main(session: Session | None, store: CredentialStore | None) -> int:
    """Log in (unless given a session), run the main window, again after a logout."""
    from apps.core.shell import Shell
    from apps.desktop.main_window import MainWindow

    note = MEMORY_NOTE if store is not None else None
    while True:
        if session is None:
            session = await ask_login(store, note)
            if session is None:
                return 0
        shell = Shell.from_session(session)
        window = MainWindow(shell)
        window.show()
        how = await next_emit(window.finished, window)
        window.deleteLater()
        if how != "logout":
            await shell.close()
            return 0
        session = None


def run_desktop(*, session: Session | None = None, memory_keyring: bool = False) -> int:
    """Open the desktop app (logged in when a session is given); what ``keyvault desktop`` calls."""
    import qasync

    from apps.core.keyring_store import CredentialStore

    app = application()
    GuiThreadCollector(app)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    store = CredentialStore.memory() if memory_keyring else None
    with loop:
        return int(loop.run_until_complete(desktop_main(session, store)))
