"""HomeViewModel: what needs the operator now, one item per problem, counts from the list."""

from __future__ import annotations

from datetime import timedelta

from apps.core.labels import LabelOpener
from apps.core.names import NameBook
from apps.core.viewmodels.alerts import AlertsViewModel
from apps.core.viewmodels.home import CATEGORIES, HomeViewModel, plural
from apps.core.viewmodels.vaults import VaultsViewModel
from tests.apps.fake_cp import NOW, FakeControlPlane, iso


async def home_over(fake: FakeControlPlane) -> tuple[HomeViewModel, AlertsViewModel]:
    vaults = VaultsViewModel(fake)  # type: ignore[arg-type]
    alerts = AlertsViewModel(fake)  # type: ignore[arg-type]
    names = NameBook(lambda vid: row.name if (row := vaults.row(vid)) else None)
    home = HomeViewModel(vaults, alerts, names, clock=lambda: NOW)
    await home.refresh()
    return home, alerts


def _check_counts(home: HomeViewModel) -> None:
    state = home.state
    assert sum(state.counts.values()) == state.total == len(state.items)
    for category in CATEGORIES:
        assert state.counts[category] == sum(1 for i in state.items if i.category == category)


async def test_one_item_per_problem_most_severe_first_with_names() -> None:
    fake = FakeControlPlane()
    web = fake.add_vault("web-1")
    db = fake.add_vault("db-1", status="offline")
    cache = fake.add_vault("cache-1")
    fake.vaults[cache]["certificate_not_after"] = iso(NOW + timedelta(minutes=40))
    fake.add_vault("gone-1", status="revoked")
    fake.add_alert("vault_offline", f"vault {db} is offline", "critical", db)
    failed = fake.add_alert("rotation_failed", f"rotation failed on {web}", "critical", web)
    fake.add_alert("rotation_overdue", f"rotation overdue on {web}", "warning", web)
    home, _ = await home_over(fake)

    items = home.state.items
    assert [i.category for i in items] == [
        "rotation_failed",
        "offline",
        "certificate",
        "rotation_overdue",
    ]
    assert [i.severity for i in items] == ["critical", "critical", "critical", "warning"]
    assert items[0].title == "rotation failed on web-1" and items[0].alert_id == failed["id"]
    assert items[1].title == "vault db-1 is offline"  # the alert and the status: one item
    assert items[2].title == "cache-1: certificate expires within the hour"
    assert items[2].goto == "vault"
    _check_counts(home)
    assert home.state.summary() == (
        "4 things need you: 1 failed rotation, 1 overdue rotation, 1 offline agent, 1 expiring certificate"
    )


async def test_follows_live_events_and_counts_always_agree() -> None:
    fake = FakeControlPlane()
    web = fake.add_vault("web-1")
    home, alerts = await home_over(fake)
    assert home.state.items == () and home.state.summary() == "Nothing needs you now"

    home.vaults.apply_event("vault.status", {"vault_id": web, "status": "offline"})
    assert [(i.category, i.title, i.goto) for i in home.state.items] == [
        ("offline", "web-1 is offline", "vault")
    ]
    raised = fake.add_alert("vault_offline", f"vault {web} is offline", "critical", web)
    alerts.apply_event("alert.raised", raised)
    assert len(home.state.items) == 1 and home.state.items[0].alert_id == raised["id"]
    _check_counts(home)

    home.vaults.apply_event("vault.status", {"vault_id": web, "status": "online"})
    resolved = await fake.resolve_alert(raised["id"])
    alerts.apply_event("alert.resolved", resolved)
    assert home.state.items == ()
    _check_counts(home)
    home.close()
    home.vaults.apply_event("vault.status", {"vault_id": web, "status": "offline"})
    assert home.state.items == ()  # closed: no longer follows


def test_plural_never_says_1_alerts() -> None:
    assert plural(1, "alert") == "1 alert" and plural(2, "alert") == "2 alerts"
    assert plural(0, "alert") == "0 alerts"


async def test_name_book_names_ids_and_keeps_unknown_ones() -> None:
    fake = FakeControlPlane()
    web = fake.add_vault("web-1", secrets=2)
    book = NameBook(lambda vid: "web-1" if vid == web else None)
    items = [d async for d in fake.iter_inventory(web)]
    book.learn_inventory(web, items, LabelOpener(fake.key, web))
    first = items[0]["secret_id"]
    assert book.secret(web, first) == "app/secret-0" and book.label(first) == "app/secret-0"
    book.learn("usr_owner", "owner@example.com")
    text = f"usr_owner rotated {first} on {web}; vlt_unknown1 stays"
    assert (
        book.humanize(text) == "owner@example.com rotated app/secret-0 on web-1; vlt_unknown1 stays"
    )
    book.forget_secrets()
    assert book.secret(web, first) == first
    blind = NameBook()
    blind.learn_inventory(web, items, LabelOpener(None, web))
    assert blind.secret(web, first) == first and blind.vault(web) == web
