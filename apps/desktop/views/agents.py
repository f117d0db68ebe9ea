"""Saved agent connections, a connect form, and the way into an agent's secrets.

Secrets are read straight from an agent over mutual TLS, never through the control plane, so
each agent is saved with its URL, TLS files (paths) and API token (in the OS keyring). The
file and keyring calls run in a thread, so the window never waits on them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from apps.core.agents import AgentProfile
from apps.core.forms import AGENT_FORM
from apps.core.navigation import area
from apps.desktop.tasks import run_task
from apps.desktop.views import fit_headers, title_row, view_layout
from apps.desktop.views.ops_kit import FieldErrors, ask, show_status
from apps.desktop.views.secrets import SecretsView
from common.errors import KeyVaultError

if TYPE_CHECKING:
    from apps.core.shell import Shell


def tls_text(agent: AgentProfile) -> str:
    """How an agent is reached: its data folder, or which TLS files."""
    if agent.ca_file and agent.ca_file.endswith("/tls/ca.crt"):
        return agent.ca_file.removesuffix("/tls/ca.crt")
    return "mutual TLS" if agent.cert_file else ("CA only" if agent.ca_file else "system CAs")


class AgentsView(QWidget):
    """Saved agents and the connect form; opening one shows its secrets in place."""

    def __init__(self, shell: Shell, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.shell = shell
        self.agents: list[AgentProfile] = []
        self.secrets: SecretsView | None = None
        self.question: QMessageBox | None = None
        self.stack = QStackedWidget()
        self.list = QTableWidget(0, 3)
        self.inputs = {field: QLineEdit() for field in AGENT_FORM.names}
        self.errors = FieldErrors(list(AGENT_FORM.names))
        self.status = QLabel()
        self.status.setObjectName("summary")
        self.open_button = QPushButton("Open secrets")
        self.remove_button = QPushButton("Remove…")
        self.save_button = QPushButton("Save connection")
        self._build()
        self.reload()

    def _build(self) -> None:
        page = QWidget()
        layout = view_layout(page)
        row, _title = title_row(area("secrets").heading, self.open_button, self.remove_button)
        layout.addLayout(row)
        split = QHBoxLayout()
        left = QVBoxLayout()
        left.addWidget(self.list, 1)
        note = QLabel("Secrets are fetched from the agent itself over mutual TLS.")
        note.setObjectName("muted")
        left.addWidget(note)
        left.addWidget(self.status)
        split.addLayout(left, 3)
        right = QVBoxLayout()
        right.addWidget(self._form())
        right.addStretch(1)
        split.addLayout(right, 2)
        layout.addLayout(split, 1)
        self.list.setHorizontalHeaderLabels(["Name", "URL", "TLS files"])
        self.list.verticalHeader().hide()
        self.list.setWordWrap(False)
        self.list.setAlternatingRowColors(True)
        self.list.setShowGrid(False)
        header = self.list.horizontalHeader()
        header.setStretchLastSection(True)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.list.setColumnWidth(0, 140)
        self.list.setColumnWidth(1, 220)
        fit_headers(self.list)
        self.list.setTextElideMode(Qt.TextElideMode.ElideLeft)  # a path's end tells files apart
        self.list.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.list.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.list.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.list.itemSelectionChanged.connect(self._selection)
        self.list.doubleClicked.connect(lambda *_: self.open_selected())
        self.open_button.clicked.connect(self.open_selected)
        self.remove_button.clicked.connect(self.remove)
        self.stack.addWidget(page)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.stack)
        self._selection()

    def _form(self) -> QGroupBox:
        box = QGroupBox(AGENT_FORM.title(False))
        form = QFormLayout(box)
        for spec in AGENT_FORM.fields:
            field = spec.name
            entry = self.inputs[field]
            entry.setPlaceholderText(spec.placeholder)
            if spec.kind == "secret":
                entry.setEchoMode(QLineEdit.EchoMode.Password)
            entry.returnPressed.connect(self.save)
            column = QVBoxLayout()
            column.setSpacing(2)
            if field == "data_dir":
                browse = QPushButton("Browse…")
                browse.clicked.connect(self._browse)
                line = QHBoxLayout()
                line.addWidget(entry, 1)
                line.addWidget(browse)
                column.addLayout(line)
            else:
                column.addWidget(entry)
            if spec.help:
                note = QLabel(spec.help)
                note.setObjectName("muted")
                column.addWidget(note)
            column.addWidget(self.errors.labels[field])
            form.addRow(spec.label, column)
        form.addRow(self.errors.form)
        self.save_button.clicked.connect(self.save)
        form.addRow("", self.save_button)
        box.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        return box

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "The agent's data folder")
        if folder:
            self.inputs["data_dir"].setText(folder)

    # ------------------------------------------------------------ the list
    def reload(self) -> None:
        """Re-read the saved agents (a file: in a thread)."""
        run_task(self, asyncio.to_thread(self.shell.agents.list), done=self._paint)

    def _paint(self, agents: list[AgentProfile]) -> None:
        self.agents = agents
        self.list.setRowCount(len(agents))
        for at, agent in enumerate(agents):
            for column, text in enumerate((agent.name, agent.url, tls_text(agent))):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.list.setItem(at, column, item)
        count = len(agents)
        hint = "double-click one to open its secrets" if agents else "connect one with the form"
        show_status(self.status, f"{count} saved agent{'' if count == 1 else 's'} · {hint}")
        self._selection()

    def chosen(self) -> AgentProfile | None:
        """The selected saved agent, or None."""
        rows = self.list.selectionModel().selectedRows()
        return self.agents[rows[0].row()] if rows and rows[0].row() < len(self.agents) else None

    def _selection(self) -> None:
        has = self.chosen() is not None
        self.open_button.setEnabled(has)
        self.remove_button.setEnabled(has)

    # ------------------------------------------------------------ saving and removing
    def save(self) -> None:
        """Check the form and save the connection (its token to the keyring, in a thread)."""
        values = {field: entry.text() for field, entry in self.inputs.items()}
        self.errors.clear()
        self.save_button.setEnabled(False)

        def work() -> AgentProfile:
            return self.shell.agents.save(AgentProfile.from_form(values), values["token"])

        run_task(self, asyncio.to_thread(work), done=self._saved, failed=self._failed)

    def _saved(self, profile: AgentProfile) -> None:
        self.save_button.setEnabled(True)
        for entry in self.inputs.values():
            entry.clear()
        show_status(self.status, f"saved agent {profile.name!r}")
        self.reload()

    def _failed(self, error: KeyVaultError) -> None:
        self.save_button.setEnabled(True)
        field = self.errors.show(error)
        if field in self.inputs:
            self.inputs[field].setFocus()

    def remove(self) -> QMessageBox | None:
        """Forget the selected connection and its token, after a confirmation."""
        agent = self.chosen()
        if agent is None:
            return None

        def confirmed() -> None:
            work = asyncio.to_thread(self.shell.agents.remove, agent.name)
            run_task(self, work, done=lambda _: self.reload())

        question = f"Remove the connection {agent.name!r} and its token?"
        self.question = ask(self, question, "Remove", confirmed)
        return self.question

    # ------------------------------------------------------------ secrets
    def open_selected(self) -> SecretsView | None:
        """Show the selected agent's secrets."""
        agent = self.chosen()
        return self.open_agent(agent) if agent is not None else None

    def open_agent(self, agent: AgentProfile) -> SecretsView:
        """Show one agent's secrets in place of the list."""
        self.close_secrets()
        view = SecretsView(self.shell, agent, self)
        view.back.connect(self.close_secrets)
        self.secrets = view
        self.stack.addWidget(view)
        self.stack.setCurrentWidget(view)
        return view

    def close_secrets(self) -> None:
        """Back to the list; the agent connection is closed."""
        view, self.secrets = self.secrets, None
        if view is None:
            return
        self.stack.setCurrentIndex(0)
        self.stack.removeWidget(view)
        if view.vm is not None:
            run_task(self, view.vm.close())
        view.deleteLater()
