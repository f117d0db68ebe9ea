"""The main window: navigation, the views, header facts, offline banner, message bar, tray."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QColor,
    QIcon,
    QKeySequence,
    QPainter,
    QPixmap,
)
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMainWindow,
    QPushButton,
    QStackedWidget,
    QSystemTrayIcon,
    QVBoxLayout,
    QWidget,
)

from apps.core.keys import desktop_shortcuts
from apps.core.metadata_keys import DEFAULT_KEY_FILE
from apps.core.navigation import AREAS, KEYS, shortcut
from apps.core.rules import alerts_text
from apps.core.viewmodels.alerts import AlertsState
from apps.desktop import theme
from apps.desktop.tasks import run_task, set_default_failed
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.shell import Shell

#: (key, title, module under apps.desktop.views, class) of the core's areas, in order
NAV: tuple[tuple[str, str, str, str], ...] = tuple(
    (a.key, a.title, a.page, f"{a.stem}View") for a in AREAS
)
SETTINGS = ("KeyVault", "KeyVault Desktop")
MESSAGE_MS = 10_000


def settings() -> QSettings:
    """The app's QSettings (geometry, last view, theme — never a token or key)."""
    return QSettings(*SETTINGS)


def tray_icon(unread: int) -> QIcon:
    """A key-shaped badge with the unread count in a red dot."""
    pix = QPixmap(64, 64)
    pix.fill(Qt.GlobalColor.transparent)
    p = QPainter(pix)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setBrush(QColor("#0969da"))
    p.setPen(Qt.PenStyle.NoPen)
    p.drawRoundedRect(4, 4, 56, 56, 12, 12)
    p.setPen(QColor("#ffffff"))
    font = p.font()
    font.setPixelSize(34)
    font.setBold(True)
    p.setFont(font)
    p.drawText(pix.rect(), Qt.AlignmentFlag.AlignCenter, "K")
    if unread:
        p.setBrush(QColor("#cf222e"))
        p.setPen(Qt.PenStyle.NoPen)
        p.drawEllipse(30, 0, 34, 34)
        p.setPen(QColor("#ffffff"))
        font.setPixelSize(20)
        p.setFont(font)
        p.drawText(30, 0, 34, 34, Qt.AlignmentFlag.AlignCenter, "9+" if unread > 9 else str(unread))
    p.end()
    return QIcon(pix)


class MessageBar(QFrame):
    """A dismissible one-line message above the views (errors stay until dismissed)."""

    COLORS = {"error": ("#ffebe9", "#82071e"), "info": ("#ddf4ff", "#0a3069")}

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageBar")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(12, 6, 8, 6)
        self.label = QLabel()
        self.label.setWordWrap(True)
        close = QPushButton("Dismiss")
        close.setFlat(True)
        close.clicked.connect(self.hide)
        layout.addWidget(self.label, 1)
        layout.addWidget(close)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.hide()

    def show_message(self, text: str, level: str = "info") -> None:
        """Show one line; info messages hide by themselves after a while."""
        back, fore = self.COLORS.get(level, self.COLORS["info"])
        self.setStyleSheet(
            f"QFrame#messageBar {{ background: {back}; }} QLabel {{ color: {fore}; }}"
        )
        self.label.setText(text)
        self.setProperty("level", level)
        self.show()
        if level == "info":
            self._timer.start(MESSAGE_MS)
        else:
            self._timer.stop()


class MainWindow(QMainWindow):
    """Navigation on the left, one view at a time on the right; ``finished`` on quit/logout."""

    finished = Signal(str)  # "quit" or "logout"
    critical_alert = Signal(str)  # the message of each new critical alert

    def __init__(self, shell: Shell, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shell = shell
        self.views: dict[str, QWidget] = {}
        self._known_alerts: set[str] | None = None  # baseline set once the first load is done
        self._ending = False
        self.ready = False  # the shell has started and loaded its first data
        self.setWindowTitle("KeyVault")
        self._build()
        self._build_menus()
        self.tray = QSystemTrayIcon(tray_icon(0), self)
        self.tray.setToolTip("KeyVault")
        self.tray.activated.connect(lambda *_: self._raise_alerts())
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.tray.show()
        set_default_failed(self.show_error)
        self._unhook = [
            shell.on_status(lambda _online: self._header()),
            shell.alerts.subscribe(self._alerts_changed),
        ]
        self._restore()
        self._header()
        run_task(self, shell.start(), done=lambda _: self._started())

    # ------------------------------------------------------------ building
    def _build(self) -> None:
        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        top = QHBoxLayout()
        top.setContentsMargins(16, 8, 16, 8)
        brand = QLabel("KeyVault")
        brand.setObjectName("title")
        self.header = QLabel()
        self.header.setObjectName("header")
        top.addWidget(brand)
        top.addStretch(1)
        top.addWidget(self.header)
        outer.addLayout(top)
        self.banner = QLabel("Live updates are offline — reconnecting. What you see may be stale.")
        self.banner.setObjectName("banner")
        outer.addWidget(self.banner)
        self.message_bar = MessageBar()
        outer.addWidget(self.message_bar)
        body = QHBoxLayout()
        body.setSpacing(0)
        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.nav.setFixedWidth(200)
        for _, title, _, _ in NAV:
            self.nav.addItem(title)
        self.stack = QStackedWidget()
        body.addWidget(self.nav)
        body.addWidget(self.stack, 1)
        outer.addLayout(body, 1)
        self.setCentralWidget(central)
        self.nav.currentRowChanged.connect(self._nav_changed)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "Import metadata key…", self.import_metadata_key)
        self._action(file_menu, "Create metadata key…", self.create_metadata_key)
        self._action(file_menu, "Log out", self.logout)
        self._action(file_menu, "Quit", self.close, QKeySequence.StandardKey.Quit)
        view_menu = bar.addMenu("&View")
        for key, title, _, _ in NAV:
            self._action(view_menu, title, lambda k=key: self.show_view(k), shortcut(key))
        reload = self._action(view_menu, "Reload", self.refresh)
        reload.setShortcuts([QKeySequence(k) for k in desktop_shortcuts("reload")])
        theme_menu = view_menu.addMenu("Theme")
        group = QActionGroup(self)
        current = str(settings().value("theme", "system"))
        self.theme_actions: dict[str, QAction] = {}
        for name in theme.THEMES:
            action = self._action(theme_menu, name.capitalize(), lambda n=name: self.set_theme(n))
            action.setCheckable(True)
            action.setChecked(name == current)
            group.addAction(action)
            self.theme_actions[name] = action

    def _action(self, menu: Any, text: str, slot: Any, shortcut: Any = None) -> QAction:
        action = menu.addAction(text)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(lambda *_: slot())
        return action

    # ------------------------------------------------------------ views
    def show_view(self, key: str) -> QWidget:
        """Switch to a view (built on first use); returns it."""
        keys = [k for k, _, _, _ in NAV]
        if key not in keys:
            key = "vaults"
        if self.nav.currentRow() != keys.index(key):
            self.nav.setCurrentRow(keys.index(key))  # → _nav_changed
        return self.views[key]

    def _nav_changed(self, at: int) -> None:
        key = NAV[at][0]
        view = self.views.get(key) or self._make_view(key)
        self.stack.setCurrentWidget(view)
        settings().setValue("last_view", key)

    def _make_view(self, key: str) -> QWidget:
        _, title, module, name = next(n for n in NAV if n[0] == key)
        try:
            cls = getattr(importlib.import_module(f"apps.desktop.views.{module}"), name)
            view: QWidget = cls(self.shell, self)
        except (ImportError, AttributeError):
            view = QLabel(f"The {title} view is not available in this build.")
            view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        if key in ("vaults", "home"):
            view.open_vault.connect(self.open_vault)  # type: ignore[attr-defined]
        if key == "home":
            view.open_alerts.connect(lambda: self.show_view("alerts"))  # type: ignore[attr-defined]
        self.views[key] = view
        self.stack.addWidget(view)
        return view

    def open_vault(self, vault_id: str) -> QWidget:
        """Show one vault's detail (replacing a previous one)."""
        from apps.desktop.views.vault_detail import VaultDetailView

        old = self.views.pop("vault_detail", None)
        detail = VaultDetailView(self.shell, vault_id, self)
        detail.back.connect(lambda: self.stack.setCurrentWidget(self.views["vaults"]))
        self.views["vault_detail"] = detail
        self.stack.addWidget(detail)
        self.stack.setCurrentWidget(detail)
        if old is not None:
            self.stack.removeWidget(old)
            old.deleteLater()
        return detail

    def current_view(self) -> QWidget:
        """The view shown now."""
        current = self.stack.currentWidget()
        assert current is not None  # the vaults view is always built first
        return current

    def refresh(self) -> None:
        """Reload the current view (if it can)."""
        refresh = getattr(self.current_view(), "refresh", None)
        if callable(refresh):
            refresh()

    # ------------------------------------------------------------ live facts
    def _header(self) -> None:
        profile = self.shell.session.profile
        who = profile.email + (f" ({profile.role})" if profile.role else "")
        live = "● live" if self.shell.online else "○ offline"
        state = self.shell.alerts.state
        unread = state.unread
        alerts = alerts_text(state.open, unread)
        org = profile.org_name or profile.org_id or profile.control_plane_url
        self.header.setText(f"{org}  ·  {who}  ·  {live}  ·  {alerts}")
        self.banner.setVisible(not self.shell.online)
        self.tray.setIcon(tray_icon(unread))
        self.tray.setToolTip(f"KeyVault — {alerts}")
        title = self.nav.item(KEYS.index("alerts"))
        if title is not None:
            title.setText(f"Alerts ({unread})" if unread else "Alerts")

    def _started(self) -> None:
        self._known_alerts = {r.id for r in self.shell.alerts.state.rows}
        self.ready = True
        self._header()

    def _alerts_changed(self, state: AlertsState) -> None:
        self._header()
        if self._known_alerts is None:
            return
        for row in state.rows:
            if row.id in self._known_alerts:
                continue
            self._known_alerts.add(row.id)
            if row.severity == "critical" and row.state == "open":
                message = self.shell.names.humanize(row.message, row.vault_id)
                self.tray.showMessage(
                    "KeyVault: critical alert", message, QSystemTrayIcon.MessageIcon.Critical
                )
                self.critical_alert.emit(message)

    def _raise_alerts(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()
        self.show_view("alerts")

    def show_error(self, error: KeyVaultError) -> None:
        """Show an error in the message bar (the default for every task)."""
        self.message_bar.show_message(error.message, "error")

    def show_info(self, text: str) -> None:
        """Show a short confirmation in the message bar."""
        self.message_bar.show_message(text, "info")

    # ------------------------------------------------------------ preferences, ending
    def set_theme(self, choice: str) -> None:
        """Apply and remember a theme preference (system, light or dark)."""
        app = QApplication.instance()
        if isinstance(app, QApplication):
            theme.apply(app, choice)
        settings().setValue("theme", choice)
        self.theme_actions[choice].setChecked(True)

    def _restore(self) -> None:
        saved = settings()
        geometry = saved.value("geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1180, 720)
        last = str(saved.value("last_view", "home"))
        self.show_view("vaults")  # the fleet is always built first (its rows feed every view)
        self.show_view(last)

    def import_metadata_key(self, path: str | None = None) -> None:
        """Import the organisation's key file (asked for when not given); names appear at once
        in every open view. Kept in the OS keyring, or in memory under --memory-keyring."""
        from PySide6.QtWidgets import QFileDialog

        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Import the metadata key file")
        if path:
            run_task(
                self,
                self.shell.import_metadata_key(Path(path)),
                done=lambda key: self.show_info(f"Metadata key {key.fingerprint[:19]}… in use."),
            )

    def create_metadata_key(self, path: str | None = None) -> None:
        """Create the organisation's key (owner) and write the agents' key file."""
        from PySide6.QtWidgets import QFileDialog

        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Write the new metadata key file", DEFAULT_KEY_FILE
            )
        if path:
            run_task(
                self,
                self.shell.create_metadata_key(Path(path)),
                done=lambda key: self.show_info(
                    f"Metadata key {key.fingerprint[:19]}… created; copy {path} to the agents."
                ),
            )

    def logout(self) -> None:
        """Revoke the session, forget its token, and end with ``finished("logout")``."""
        if self._ending:
            return
        self._ending = True
        run_task(self, self.shell.logout(), done=self._logged_out, failed=self._logged_out)

    def _logged_out(self, result: Any) -> None:
        if result is False or isinstance(result, KeyVaultError):
            self.show_info("Logged out here; the control plane was unreachable.")
        self._finish("logout")
        self.close()

    def _finish(self, how: str) -> None:
        for unhook in self._unhook:
            unhook()
        self._unhook = []
        set_default_failed(None)
        self.tray.hide()
        self.finished.emit(how)

    def closeEvent(self, event: QCloseEvent) -> None:
        """Remember the geometry; end with ``finished("quit")`` unless logging out."""
        settings().setValue("geometry", self.saveGeometry())
        if self._unhook:
            self._finish("quit")
        super().closeEvent(event)
