"""One vault: its facts, its secrets' metadata (names opened locally) and recent commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from apps.core.rules import shown_status
from apps.core.timefmt import ago, day, time_left
from apps.core.viewmodels.vault_detail import VaultDetailState, command_text
from apps.desktop import theme
from apps.desktop.models import ROW_ROLE, stamp, utcnow
from apps.desktop.models.inventory_model import InventoryTableModel
from apps.desktop.tasks import run_task
from apps.desktop.views import (
    attach,
    error_label,
    fast_table,
    follow,
    show_error,
    title_row,
    view_layout,
)

if TYPE_CHECKING:
    from apps.core.shell import Shell

WIDTHS = (240, 260, 70, 110, 100, 140)


class VaultDetailView(QWidget):
    """A vault's detail: rotate a secret, resync the inventory, follow command results."""

    back = Signal()

    def __init__(self, shell: Shell, vault_id: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shell = shell
        self.vault_id = vault_id
        self.vm = shell.vault_detail(vault_id)  # kept: the shell feeds it while referenced
        self.model = InventoryTableModel(parent=self)
        self._build()
        follow(self, self.vm.subscribe, self.show_state)
        self.show_state(self.vm.state)
        self.refresh()

    def _build(self) -> None:
        layout = view_layout(self)
        self.back_button = QPushButton("← Vaults")
        self.rotate_button = QPushButton("Rotate secret")
        self.resync_button = QPushButton("Resync")
        self.refresh_button = QPushButton("Refresh")
        header, self.title = title_row(
            self.vault_id, self.rotate_button, self.resync_button, self.refresh_button
        )
        header.insertWidget(0, self.back_button)
        layout.addLayout(header)
        facts = QFormLayout()
        facts.setHorizontalSpacing(16)
        self.facts = {name: QLabel() for name in ("Status", "ID", "Agent", "Last seen", "Cert")}
        for name, label in self.facts.items():
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            facts.addRow(f"{name}:", label)
        layout.addLayout(facts)
        self.sealed_note = QLabel(
            "Secret names are sealed: this computer has no copy of the organisation's metadata key "
            "(File → Import metadata key…)."
        )
        self.sealed_note.setObjectName("muted")
        layout.addWidget(self.sealed_note)
        self.error = error_label()
        layout.addWidget(self.error)
        split = QSplitter(Qt.Orientation.Vertical)
        self.table = fast_table(WIDTHS, stretch=1)
        attach(self.table, self.model)
        split.addWidget(self.table)
        commands = QWidget()
        box = QVBoxLayout(commands)
        box.setContentsMargins(0, 6, 0, 0)
        caption = QLabel("Recent commands (rotate, resync) and their results")
        caption.setObjectName("muted")
        box.addWidget(caption)
        self.commands = QListWidget()
        box.addWidget(self.commands)
        split.addWidget(commands)
        split.setSizes([420, 140])
        layout.addWidget(split, 1)
        self.back_button.clicked.connect(self.back.emit)
        self.refresh_button.clicked.connect(self.refresh)
        self.rotate_button.clicked.connect(self.rotate_selected)
        self.resync_button.clicked.connect(self.resync)

    def show_state(self, state: VaultDetailState) -> None:
        """Repaint facts, rows and commands."""
        vault, now = state.vault, utcnow()
        if vault is not None:
            self.title.setText(vault.name or vault.id)
            status = shown_status(vault)
            color = theme.status_color(status)
            style = f"color: {color.name()}; font-weight: 600;" if color else ""
            self.facts["Status"].setText(status)
            self.facts["Status"].setStyleSheet(style)
            self.facts["ID"].setText(vault.id)
            self.facts["Agent"].setText(vault.version or "—")
            self.facts["Last seen"].setText(ago(vault.last_seen, now))
            self.facts["Cert"].setText(
                f"expires {time_left(vault.cert_expiry, now)} ({day(vault.cert_expiry)})"
            )
        self.model.apply_rows(state.items)
        self.sealed_note.setVisible(not state.has_key and bool(state.items))
        self.commands.clear()
        humanize, vault_id = self.shell.names.humanize, vault.id if vault else ""
        for command in state.commands:
            line = command_text(command, humanize, vault_id)
            self.commands.addItem(f"{stamp(command.created_at)}  {line}")
        if not state.commands:  # an empty box reads as broken: say why it is empty
            self.commands.addItem("No commands yet: Rotate secret or Resync sends one.")
            self.commands.item(0).setFlags(Qt.ItemFlag.NoItemFlags)
        show_error(self.error, state.error)

    def refresh(self) -> None:
        """Reload the vault, its inventory and commands."""
        run_task(self, self.vm.refresh())

    def rotate_selected(self) -> None:
        """Ask the agent to rotate the selected secret now."""
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return
        item = rows[0].data(ROW_ROLE)
        run_task(self, self.vm.rotate(item.secret_id))

    def resync(self) -> None:
        """Ask the agent to send its whole inventory again."""
        run_task(self, self.vm.resync())
