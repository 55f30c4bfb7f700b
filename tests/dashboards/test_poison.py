"""The three poison events of security review 2 (finding 1), injected straight into the log with
SQL as if an older version had accepted them: no projector stops, the dashboards dead-letter the
poison, the rest of its batch is applied, /healthz reports it, and a rebuild completes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from django.core.management import call_command
from django.db import connection

from campaigns.models import CampaignSettings
from carts import projectors, services
from carts.models import DailyEventCount, DeadLetter, ProjectorCheckpoint
from carts.sources import Source
from config import health
from dashboards import projection
from dashboards.models import CartFact, DailyCount
from dashboards.projection.counters import Counters
from tests.conftest import item, new_event
from tests.e2e import procs
from tests.log_sql import event_inject

T = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
HUGE = 5 * 10**18  # one cart's value in case (c): two of them overflow int8


def inject(
    store_id: int, cart: str, type_: str, data: dict[str, Any], occurred_at: datetime, version=1
) -> int:
    """An event written with SQL, past every check of the append service. Returns its position."""
    return event_inject(store_id, cart, type_, data, version=version, occurred_at=occurred_at)


def _append(store_id: int, *events) -> None:
    services.events_append(store_id=store_id, events=list(events), source=Source.server("test"))


@dataclass(frozen=True)
class Case:
    zone: str
    poison: list[tuple[str, dict[str, Any], datetime]]  # (cart, item data, occurred_at)
    error: str


CASES = {
    # (a) a cart's first item event at the end of the calendar (UTC store)
    "far-future": Case(
        "UTC",
        [("poison", item("P", 1, 1000), datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))],
        "Unrepresentable: occurred_at out of range: 9999-12-31T23:59:59+00:00",
    ),
    # (b) near either end for a store whose zone is not UTC
    "berlin-end": Case(
        "Europe/Berlin",
        [("poison", item("P", 1, 1000), datetime(9999, 12, 31, 23, 30, tzinfo=UTC))],
        "Unrepresentable: occurred_at out of range: 9999-12-31T23:30:00+00:00",
    ),
    "new-york-start": Case(
        "America/New_York",
        [("poison", item("P", 1, 1000), datetime(1, 1, 1, 0, 30, tzinfo=UTC))],
        "Unrepresentable: occurred_at out of range: 0001-01-01T00:30:00+00:00",
    ),
    # (c) two carts of 5 * 10^18 in the same hour (no quantity cap in an older version)
    "int8-sum": Case(
        "UTC",
        [
            ("poison", item("P", 5_000_000, 10**12), T + timedelta(minutes=5)),
            ("poison-2", item("Q", 5_000_000, 10**12), T + timedelta(minutes=6)),
        ],
        f"Unrepresentable: cart value out of range: {HUGE}",
    ),
}


def _healthz(client, settings) -> tuple[int, dict]:
    """GET /healthz with live heartbeats in a Redis database of this test's own (so only the
    dead letters can make it anything but ok)."""
    settings.REDIS_URL = procs.redis_url_with_db(settings.REDIS_URL, procs.isolated_redis_db())
    conn = redis.Redis.from_url(settings.REDIS_URL)
    try:
        conn.set(health.WORKER_HEARTBEAT_KEY, repr(time.time()))
        conn.set(health.SCHEDULER_HEARTBEAT_KEY, repr(time.time()))
        response = client.get("/healthz")
    finally:
        conn.delete(health.WORKER_HEARTBEAT_KEY, health.SCHEDULER_HEARTBEAT_KEY)
        conn.close()
    return response.status_code, response.json()


def _last_position(store_id: int) -> int:
    """The store's last store position (checkpoints count per store: docs/adr/0003)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT MAX(store_position) FROM carts_cartevent WHERE store_id = %s", [store_id]
        )
        return int(cursor.fetchone()[0])


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_poison_event_is_dead_lettered_and_the_rest_of_its_batch_applied(
    store, client, settings, case
):
    CampaignSettings.objects.update_or_create(store=store, defaults={"timezone": case.zone})
    # given good events, the poison, and good events after it, all in one batch
    _append(store.pk, new_event("cart.item_added", "before", item("A", 2, 500), at=T))
    poisons = [
        inject(store.pk, cart, "cart.item_added", data, occurred)
        for cart, data, occurred in case.poison
    ]
    _append(
        store.pk,
        new_event("cart.item_added", "after", item("B", 1, 700), at=T + timedelta(minutes=7)),
        new_event("page.viewed", "before", {"url": "/p", "page_type": "product"}, at=T),
    )

    # when every registered projector catches up
    for name in projectors.REGISTRY:
        projectors.projector_catch_up(name=name)

    # then the dashboards dead-lettered exactly the poison, with its position and the reason
    letters = list(
        DeadLetter.objects.filter(store_id=store.pk)
        .order_by("position")
        .values_list("projector", "position", "cart", "event_type", "error", "resolved_at")
    )
    assert [(p, pos, c, t, r) for p, pos, c, t, _, r in letters] == [
        ("dashboard", position, cart, "cart.item_added", None)
        for position, (cart, _, _) in zip(poisons, case.poison, strict=True)
    ]
    assert letters[0][4].startswith(case.error)
    # the other events of the batch were applied
    facts = dict(
        CartFact.objects.filter(store_id=store.pk).values_list("cart", "value").order_by("cart")
    )
    assert facts == {"before": 1000, "after": 700}
    assert DailyCount.objects.filter(store_id=store.pk, metric="started").exists()
    assert sum(
        DailyEventCount.objects.filter(store_id=store.pk).values_list("count", flat=True)
    ) == 3 + len(poisons)
    # every checkpoint is past it
    last = _last_position(store.pk)
    for name in projectors.REGISTRY:
        assert ProjectorCheckpoint.objects.get(name=name, store=store).position == last
    # /healthz reports it: 200, degraded
    status, body = _healthz(client, settings)
    assert status == 200
    assert (body["status"], body["down"], body["degraded"]) == ("degraded", [], ["dead_letters"])
    assert body["components"]["dead_letters"] == {
        "ok": True,
        "degraded": True,
        "count": len(poisons),
        "projectors": {"dashboard": {"count": len(poisons), "oldest_position": poisons[0]}},
    }
    assert body["components"]["projectors"]["lag"] == dict.fromkeys(projectors.REGISTRY, 0)

    # and the documented repair completes, recording the poison again (still open)
    call_command("rebuild_projections", "dashboard")

    again = list(
        DeadLetter.objects.filter(store_id=store.pk)
        .order_by("position")
        .values_list("projector", "position", "resolved_at")
    )
    assert again == [("dashboard", position, None) for position in poisons]
    rebuilt = dict(CartFact.objects.filter(store_id=store.pk).values_list("cart", "value"))
    assert rebuilt == facts


def test_healthz_is_ok_without_dead_letters(db, client, settings):
    status, body = _healthz(client, settings)

    assert status == 200
    assert (body["status"], body["degraded"]) == ("ok", [])
    assert body["components"]["dead_letters"] == {"ok": True, "count": 0}


def test_a_cart_at_the_bounds_folds(store):
    # given the largest cart value the dashboards hold, at the last instant they hold (past
    # what ingestion accepts today, so written with SQL)
    edge = projection.row.LATEST
    inject(store.pk, "big", "cart.item_added", item("A", 1000, 10**12), edge)

    projectors.projector_catch_up(name="dashboard")

    assert not DeadLetter.objects.filter(store_id=store.pk).exists()
    fact = CartFact.objects.get(store_id=store.pk, cart="big")
    assert (fact.value, fact.started_at) == (projection.row.MAX_AMOUNT, edge)


def test_counter_amounts_are_numeric_and_cannot_overflow(store):
    # given two carts' contributions to one counter that add up past int8
    counters = Counters()
    for _ in range(2):
        counters.add(store.pk, "abandoned", T.date(), None, currency="EUR", amount=HUGE)

    projection._write([], counters)

    row = DailyCount.objects.get(store_id=store.pk, metric="abandoned")
    assert (row.count, row.amount) == (2, 2 * HUGE)
    assert 2 * HUGE > 2**63 - 1


def test_a_campaign_window_past_the_calendar_end_does_not_overflow(store):
    # given an enrolled cart whose campaign's attribution window reaches past year 9999
    from dashboards.projection.fold import derive
    from dashboards.projection.row import Fact

    fact = Fact(store.pk, "c")
    fact.campaign_id = 7
    fact.enrolled_abandoned_at = datetime(9999, 1, 1, tzinfo=UTC)
    fact.converted_at = datetime(9999, 6, 1, tzinfo=UTC)
    fact.order_total = 100
    derive(fact, {7: (2**31 - 1, 0)}, projection.zone_of("UTC"))

    assert fact.converted_in_window is True


def test_an_item_event_costs_the_same_whatever_the_cart_s_line_count():
    # Review finding 8: each item event copied and re-summed every line (a 30,000-line cart took
    # ~50 s per 1,000 events). Pure: no database.
    from types import SimpleNamespace

    from dashboards.projection.fold import fold
    from dashboards.projection.row import Fact

    fact, counters, utc = Fact(1, "c"), Counters(), projection.zone_of("UTC")

    def add(sku: str, quantity: int = 1) -> None:
        event = SimpleNamespace(type="cart.item_added", occurred_at=T)
        fold(fact, event, item(sku, quantity, 10), utc, counters)  # type: ignore[arg-type]

    for i in range(30_000):
        add(f"s{i}")
    lines = fact.lines
    started = time.perf_counter()
    for i in range(1_000):
        add(f"t{i}")
    elapsed = time.perf_counter() - started
    remove = SimpleNamespace(type="cart.item_removed", occurred_at=T)
    fold(fact, remove, {"sku": "s5", "quantity": 1}, utc, counters)  # type: ignore[arg-type]
    change = SimpleNamespace(type="cart.item_quantity_changed", occurred_at=T)
    fold(fact, change, {"sku": "t0", "quantity": 4}, utc, counters)  # type: ignore[arg-type]
    add("s7", 2)

    assert fact.lines is lines  # updated in place, never copied
    assert elapsed < 1.0  # ~2 ms here; the copying fold took ~50 s
    assert len(fact.lines) == 30_999
    assert fact.item_count == sum(line[2] for line in fact.lines) == 31_000 - 1 + 3 + 2
    assert fact.value == sum(line[2] * line[3] for line in fact.lines) == 10 * fact.item_count
    assert fact.peak_value == fact.value
