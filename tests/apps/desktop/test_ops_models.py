"""The operations table models without a window: cells, roles, masking, sorting, filtering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtWidgets import QApplication

from apps.core.viewmodels.agent_secrets import SecretRow
from apps.core.viewmodels.audit import AuditRow
from apps.core.viewmodels.enrollment import TokenRow
from apps.core.viewmodels.policies import PolicyRow
from apps.desktop import theme
from apps.desktop.models import ROW_ROLE, SORT_ROLE
from apps.desktop.models.audit_model import OUTCOME, SEQ, AuditTableModel
from apps.desktop.models.policies_model import EVERY, NOTICE, SELECTS, PoliciesTableModel
from apps.desktop.models.secrets_model import (
    LABELS,
    MASK,
    STATE,
    VALUE,
    VERSION,
    SecretsTableModel,
    secret_key,
)
from apps.desktop.models.tokens_model import DESCRIPTION, EXPIRES, TokensTableModel
from apps.desktop.views.ops_kit import proxy_for

DISPLAY = Qt.ItemDataRole.DisplayRole
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def policy(n: int, days: int, notice: int = 0) -> PolicyRow:
    """A policy row as the view model makes it from the API's JSON."""
    return PolicyRow.from_json(
        {
            "id": f"pol_{n}",
            "name": f"policy {n}",
            "selector": {"name_glob": "db/*", "labels": {"env": "prod"}},
            "interval_seconds": days * 86400,
            "notice_seconds": notice * 86400,
            "rotator": {"type": "random", "settings": {}},
            "scope": {"all": True},
            "updated_at": (T0 + timedelta(days=n)).isoformat(),
        }
    )


def secret(name: str, version: int = 1, deleted: bool = False) -> SecretRow:
    """A secret row (metadata only)."""
    return SecretRow(name, version, (("env", "prod"),), T0, deleted)


def texts(model: object, column: int) -> list[str]:
    """A column's texts, top to bottom."""
    assert hasattr(model, "rowCount") and hasattr(model, "index")
    return [str(model.index(r, column).data(DISPLAY)) for r in range(model.rowCount())]


def test_policies_model_cells_and_numeric_sort(qapp: QApplication) -> None:
    model = PoliciesTableModel()
    rows = [policy(1, 30, 7), policy(2, 7), policy(3, 90)]
    model.set_rows(rows)
    assert model.rowCount() == 3 and model.columnCount() == len(model.HEADERS)
    assert model.rowCount(model.index(0, 0)) == 0  # a flat table
    assert model.headerData(EVERY, Qt.Orientation.Horizontal) == "Every"
    assert model.index(0, SELECTS).data() == "name ~ db/* and env=prod"
    assert (model.index(0, EVERY).data(), model.index(0, NOTICE).data()) == ("30 d", "7 d")
    assert model.index(1, NOTICE).data() == "—"
    assert model.index(2, 0).data(ROW_ROLE) is rows[2]
    proxy = proxy_for(model)
    proxy.sort(EVERY, Qt.SortOrder.AscendingOrder)
    assert texts(proxy, EVERY) == ["7 d", "30 d", "90 d"]  # by number, not "30" < "7"


def test_policies_update_row_changes_one_row(qapp: QApplication) -> None:
    model = PoliciesTableModel()
    model.set_rows([policy(1, 30), policy(2, 7)])
    seen: list[tuple[int, int]] = []
    model.dataChanged.connect(lambda a, b, *_: seen.append((a.row(), b.row())))
    assert model.update_row("pol_2", policy(2, 14))
    assert seen == [(1, 1)] and model.index(1, EVERY).data() == "14 d"
    assert not model.update_row("pol_9", policy(9, 1))


def test_audit_model_sorts_by_sequence_and_flags_failures(qapp: QApplication) -> None:
    theme.apply(qapp, "light")
    model = AuditTableModel()
    rows = [
        AuditRow.from_json({"seq": s, "action": "a", "source": "control_plane", "outcome": o})
        for s, o in ((2, "ok"), (10, "denied"), (1, "ok"))
    ]
    model.set_rows(rows)
    assert model.index(1, OUTCOME).data(Qt.ItemDataRole.ForegroundRole) == theme.status_color(
        "critical"
    )
    assert model.index(0, OUTCOME).data(Qt.ItemDataRole.ForegroundRole) is None
    assert model.index(1, SEQ).data(SORT_ROLE) == 10
    proxy = proxy_for(model)
    proxy.sort(SEQ, Qt.SortOrder.DescendingOrder)
    assert texts(proxy, SEQ) == ["10", "2", "1"]
    proxy.setFilterFixedString("DENIED")
    assert texts(proxy, SEQ) == ["10"]


def test_secrets_model_masks_until_revealed(qapp: QApplication) -> None:
    model = SecretsTableModel()
    model.set_rows([secret("db/password", 3), secret("db/password", 2, deleted=True)])
    assert texts(model, VALUE) == [MASK, MASK]
    assert texts(model, LABELS) == ["env=prod", "env=prod"]
    assert texts(model, STATE) == ["active", "deleted"]
    changed: list[int] = []
    model.dataChanged.connect(lambda a, *_: changed.append(a.column()))
    model.set_revealed({"db/password": "hunter2"})
    assert changed == [VALUE]
    assert texts(model, VALUE) == ["hunter2", MASK]  # never the value of a deleted secret
    assert model.index(0, VALUE).data(SORT_ROLE) == ""  # values never sort
    assert "hunter2" not in repr(model)
    model.set_revealed({})
    assert texts(model, VALUE) == [MASK, MASK]
    assert model.row_of(secret_key(secret("db/password", deleted=True))) == 1


def test_secrets_proxy_filters_names_only(qapp: QApplication) -> None:
    model = SecretsTableModel()
    model.set_rows([secret("db/password"), secret("api/key", 12), secret("db/user", 2)])
    model.set_revealed({"api/key": "db-lookalike"})
    proxy = proxy_for(model, 0)
    proxy.setFilterFixedString("DB")
    assert sorted(texts(proxy, 0)) == ["db/password", "db/user"]  # not the revealed value
    proxy.setFilterFixedString("")
    proxy.sort(VERSION, Qt.SortOrder.DescendingOrder)
    assert texts(proxy, VERSION) == ["12", "2", "1"]


def test_tokens_model(qapp: QApplication) -> None:
    theme.apply(qapp, "dark")
    model = TokensTableModel()
    rows = [
        TokenRow("tok_1", "", "active", T0, T0 + timedelta(hours=2), None, None),
        TokenRow("tok_2", "web 3", "used", T0, T0 + timedelta(hours=1), T0, "vlt_a"),
    ]
    model.set_rows(rows)
    assert texts(model, DESCRIPTION) == ["—", "web 3"]
    assert model.index(0, 1).data(Qt.ItemDataRole.ForegroundRole) == theme.status_color("online")
    proxy = proxy_for(model)
    proxy.sort(EXPIRES, Qt.SortOrder.AscendingOrder)
    assert texts(proxy, DESCRIPTION) == ["web 3", "—"]
    assert model.data(QModelIndex()) is None
    theme.apply(qapp, "light")
