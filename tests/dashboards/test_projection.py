"""The dashboard projector: what it folds into CartFact and DailyCount, batch by batch."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.core.management import call_command

from campaigns import events as ce
from campaigns.models import CampaignSettings
from carts import projectors, services
from carts.services import NewEvent
from carts.sources import Source
from dashboards import ABANDONMENT_WINDOW, projection
from dashboards.models import CartFact, DailyCount
from tests.conftest import item, new_event

T = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
DAY = date(2026, 5, 4)


def at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


def _append(store_id: int, *events: NewEvent) -> None:
    services.events_append(store_id=store_id, events=list(events), source=Source.server("test"))


def _counts(store_id: int, metric: str, *, hourly: bool = False) -> dict[tuple, tuple[int, int]]:
    rows = DailyCount.objects.filter(store_id=store_id, metric=metric, hourly=hourly)
    return {
        (r.day, r.hour, r.campaign_id, r.tier_id, r.channel, r.key, r.currency): (
            r.count,
            int(r.amount),
        )
        for r in rows
        if r.count or r.amount
    }


def _enrolled(cart: str, *, abandoned_at: datetime, now: datetime, campaign: int = 7) -> NewEvent:
    data = {
        "campaign": campaign,
        "holdout": False,
        "score": 0.5,
        "value": 0,
        "abandoned_at": abandoned_at.isoformat(),
        "steps": [],
    }
    return ce.campaign_event(cart=cart, type=ce.ENROLLED, data=data, now=now)


def test_the_projector_is_registered_and_rebuilt_by_name(store):
    _append(store.pk, new_event("cart.item_added", "a", item("X", 2, 500), at=T))

    call_command("rebuild_projections", "dashboard")

    assert projectors.REGISTRY["dashboard"].apply is projection.apply
    fact = CartFact.objects.get(store=store, cart="a")
    assert (fact.value, fact.item_count, fact.currency, fact.started_day) == (1000, 2, "EUR", DAY)


def test_a_gap_of_the_window_is_an_abandonment_at_its_start_and_only_the_first_counts(store):
    _append(
        store.pk,
        new_event("cart.item_added", "a", item("X", 2, 500), at=at(0)),
        new_event("cart.item_added", "a", item("Y", 1, 300), at=at(10)),
        new_event("page.viewed", "a", {"url": "/", "page_type": "home"}, at=at(45)),
        new_event("cart.item_removed", "a", {"sku": "X"}, at=at(50)),
        new_event("page.viewed", "a", {"url": "/", "page_type": "home"}, at=at(200)),
    )

    projectors.projector_catch_up(name="dashboard", batch_size=2)

    fact = CartFact.objects.get(store=store, cart="a")
    assert fact.abandoned_final is True
    assert fact.abandoned_at == at(40)  # last activity 10 + 30
    assert fact.abandoned_lines == [
        ["X", "Product X", 2, 500, ""],
        ["Y", "Product Y", 1, 300, ""],
    ]
    assert (fact.abandoned_value, fact.value, fact.peak_value) == (1300, 300, 1300)
    assert _counts(store.pk, "abandoned") == {(DAY, -1, 0, 0, "", "", "EUR"): (1, 1300)}
    assert _counts(store.pk, "lost_sku") == {
        (DAY, -1, 0, 0, "", "X\tProduct X", "EUR"): (1, 1000),
        (DAY, -1, 0, 0, "", "Y\tProduct Y", "EUR"): (1, 300),
    }


def test_a_quiet_cart_has_a_prospective_abandonment_that_moves_with_its_activity(store):
    _append(store.pk, new_event("cart.item_added", "a", item("X", 1, 500), at=at(0)))
    projectors.projector_catch_up(name="dashboard")
    first = CartFact.objects.get(store=store, cart="a")

    _append(store.pk, new_event("page.viewed", "a", {"url": "/", "page_type": "home"}, at=at(20)))
    projectors.projector_catch_up(name="dashboard")
    moved = CartFact.objects.get(store=store, cart="a")

    assert (first.abandoned_at, first.abandoned_final) == (at(0) + ABANDONMENT_WINDOW, False)
    assert (moved.abandoned_at, moved.abandoned_final) == (at(20) + ABANDONMENT_WINDOW, False)
    assert _counts(store.pk, "abandoned", hourly=True) == {
        (DAY, 10, 0, 0, "", "", "EUR"): (1, 500)  # 10:50, once: the 10:30 one was taken back
    }


def test_an_order_without_a_gap_is_no_abandonment(store):
    _append(
        store.pk,
        new_event("cart.item_added", "a", item("X", 1, 500), at=at(0)),
        new_event(
            "order.placed", "a", {"order_id": "o", "total": 500, "currency": "EUR"}, at=at(5)
        ),
    )

    projectors.projector_catch_up(name="dashboard")

    fact = CartFact.objects.get(store=store, cart="a")
    assert (fact.abandoned_at, fact.converted_at, fact.order_total) == (None, at(5), 500)
    assert _counts(store.pk, "abandoned") == {}
    assert _counts(store.pk, "orders") == {(DAY, -1, 0, 0, "", "", "EUR"): (1, 500)}
    assert _counts(store.pk, "came_back") == {}


def test_a_late_refund_moves_the_revenue_of_the_orders_day(store):
    _append(
        store.pk,
        new_event("cart.item_added", "a", item("X", 1, 500), at=at(0)),
        new_event(
            "order.placed", "a", {"order_id": "o", "total": 500, "currency": "EUR"}, at=at(60)
        ),
    )
    projectors.projector_catch_up(name="dashboard")
    _append(
        store.pk,
        new_event("order.refunded", "a", {"order_id": "o", "amount": 120}, at=at(60 * 24 * 6)),
    )

    projectors.projector_catch_up(name="dashboard")

    assert _counts(store.pk, "orders") == {(DAY, -1, 0, 0, "", "", "EUR"): (1, 380)}
    assert _counts(store.pk, "came_back") == {(DAY, -1, 0, 0, "", "", "EUR"): (1, 380)}
    assert _counts(store.pk, "orders", hourly=True) == {(DAY, 11, 0, 0, "", "", "EUR"): (1, 380)}


def test_an_enrolment_abandons_the_cart_at_the_earlier_time(store):
    _append(
        store.pk,
        new_event("cart.item_added", "a", item("X", 1, 500), at=at(0)),
        # A campaign with 10 minutes of inactivity acted before our 30 minutes.
        _enrolled("a", abandoned_at=at(10), now=at(11)),
        new_event("cart.item_added", "b", item("X", 1, 500), at=at(0)),
        _enrolled("b", abandoned_at=at(60), now=at(61)),
    )

    projectors.projector_catch_up(name="dashboard")

    a = CartFact.objects.get(store=store, cart="a")
    b = CartFact.objects.get(store=store, cart="b")
    assert (a.abandoned_at, a.abandoned_final, a.campaign_id, a.enrolled_abandoned_at) == (
        at(10),
        True,
        7,
        at(10),
    )
    assert (b.abandoned_at, b.abandoned_final, b.enrolled_abandoned_at) == (at(30), True, at(60))


def test_an_enrolment_after_the_order_is_no_abandonment(store):
    _append(
        store.pk,
        new_event("cart.item_added", "a", item("X", 1, 500), at=at(0)),
        new_event(
            "order.placed", "a", {"order_id": "o", "total": 500, "currency": "EUR"}, at=at(8)
        ),
        _enrolled("a", abandoned_at=at(10), now=at(11)),  # from a stale read of the cart
    )

    projectors.projector_catch_up(name="dashboard")

    fact = CartFact.objects.get(store=store, cart="a")
    assert (fact.abandoned_at, fact.campaign_id) == (None, 7)


def test_old_payload_versions_are_upcast(store):
    _append(
        store.pk,
        new_event(
            "cart.item_added",
            "a",
            {"sku": "X", "name": "X", "quantity": 2, "price": "12.50", "currency": "EUR"},
            at=T,
            schema_version=1,
        ),
    )

    projectors.projector_catch_up(name="dashboard")

    assert CartFact.objects.get(store=store, cart="a").value == 2500


def test_days_are_the_stores_local_days(store):
    CampaignSettings.objects.create(store=store, timezone="Asia/Tokyo")  # UTC+9
    _append(
        store.pk,
        new_event(
            "cart.item_added", "a", item("X", 1, 500), at=datetime(2026, 5, 4, 16, 0, tzinfo=UTC)
        ),
    )

    projectors.projector_catch_up(name="dashboard")

    fact = CartFact.objects.get(store=store, cart="a")
    assert (fact.started_day, fact.started_hour) == (date(2026, 5, 5), 1)
    assert (fact.abandoned_day, fact.abandoned_hour) == (date(2026, 5, 5), 1)


def test_the_same_token_in_two_stores_is_two_carts(store):
    other = services.store_create(name="Other shop").store_id
    _append(store.pk, new_event("cart.item_added", "a", item("X", 1, 500), at=T))
    _append(other, new_event("cart.item_added", "a", item("X", 3, 500), at=T))

    projectors.projector_catch_up(name="dashboard", batch_size=1)

    assert dict(CartFact.objects.filter(cart="a").values_list("store_id", "value")) == {
        store.pk: 500,
        other: 1500,
    }


def _mixed_log(store_id: int) -> None:
    events: list[NewEvent] = []
    for i in range(12):
        cart = f"c{i}"
        start = at(i * 17)
        events += [
            new_event(
                "cart.item_added",
                cart,
                item(f"S{i % 4}", 1 + i % 3, 250 * (i + 1), category=f"k{i % 2}"),
                at=start,
            ),
            new_event(
                "page.viewed",
                cart,
                {"url": "/", "page_type": "home"},
                at=start + timedelta(minutes=5 + i * 4),
            ),
        ]
        if i % 3 == 0:
            events.append(
                _enrolled(
                    cart,
                    abandoned_at=start + timedelta(minutes=40 + i * 4),
                    now=start + timedelta(minutes=41 + i * 4),
                )
            )
        if i % 2 == 0:
            events.append(
                new_event(
                    "order.placed",
                    cart,
                    {"order_id": f"o{i}", "total": 999, "currency": "EUR"},
                    at=start + timedelta(minutes=90 + i),
                )
            )
        if i % 4 == 0:
            events.append(
                new_event(
                    "order.refunded",
                    cart,
                    {"order_id": f"o{i}", "amount": 99},
                    at=start + timedelta(days=2),
                )
            )
    events.sort(key=lambda e: e.occurred_at)
    services.events_append(store_id=store_id, events=events, source=Source.server("test"))


def _nonzero_counts(store_id: int) -> dict[tuple, tuple[int, int, int]]:
    return dict(
        {
            (
                r.metric,
                r.hourly,
                r.day,
                r.hour,
                r.campaign_id,
                r.tier_id,
                r.channel,
                r.key,
                r.currency,
            ): (
                r.count,
                int(r.amount),
                int(r.squares),
            )
            for r in DailyCount.objects.filter(store_id=store_id)
            if r.count or r.amount or r.squares
        }
    )


def _facts(store_id: int) -> list[dict[str, Any]]:
    return [
        dict(row) for row in CartFact.objects.filter(store_id=store_id).order_by("cart").values()
    ]


def test_cart_counters_are_what_the_rows_contribute(store):
    _mixed_log(store.pk)

    projectors.projector_catch_up(name="dashboard", batch_size=5)

    expected: dict[tuple, tuple[int, ...]] = {}
    for fact in CartFact.objects.filter(store=store):
        row = projection.Fact.from_row([getattr(fact, name) for name in projection.COLUMNS])
        for dims, (count, amount, squares) in projection.contributions(row).items():
            expected[dims] = tuple(
                a + b
                for a, b in zip(
                    expected.get(dims, (0, 0, 0)), (count, amount, squares), strict=True
                )
            )
    cart_metrics = {dims[0] for dims in expected}
    counted = {
        k[0:1] + k[1:]: v for k, v in _nonzero_counts(store.pk).items() if k[0] in cart_metrics
    }
    assert counted == {k: v for k, v in expected.items() if any(v)}


def test_rebuild_equals_live_row_for_row(store):
    _mixed_log(store.pk)
    projectors.projector_catch_up(name="dashboard", batch_size=1)
    live_facts, live_counts = _facts(store.pk), _nonzero_counts(store.pk)

    projectors.projector_rebuild(name="dashboard")

    rebuilt = _facts(store.pk)
    assert [{k: v for k, v in f.items() if k != "id"} for f in rebuilt] == [
        {k: v for k, v in f.items() if k != "id"} for f in live_facts
    ]
    assert _nonzero_counts(store.pk) == live_counts
    assert len(live_facts) == 12


def test_reset_empties_both_models(store):
    _mixed_log(store.pk)
    projectors.projector_catch_up(name="dashboard")

    projection.reset()

    assert (CartFact.objects.count(), DailyCount.objects.count()) == (0, 0)


def test_odd_payloads_are_folded_without_failing(store):
    odd = {
        "step": "x",
        "campaign": 10**12,  # beyond an integer column
        "tier": -3,
        "position": None,
        "channel": "c" * 40,  # beyond the channel column
        "reason": "r" * 400,
    }
    _append(
        store.pk,
        new_event("cart.item_added", "a", item("X", 1, 500), at=at(0)),
        ce.campaign_event(cart="a", type=ce.STEP_SKIPPED, data=odd, now=at(1)),
        ce.campaign_event(
            cart="a",
            type=ce.ENROLLED,
            data={
                "campaign": "seven",
                "score": "high",
                "abandoned_at": "yesterday",
                "steps": "none",
            },
            now=at(2),
        ),
    )

    projectors.projector_catch_up(name="dashboard")

    [(channel, key, campaign, tier)] = DailyCount.objects.filter(
        store=store, metric="skipped"
    ).values_list("channel", "key", "campaign_id", "tier_id")
    assert (channel, key, campaign, tier) == ("c" * 16, "r" * 256, 0, 0)
    fact = CartFact.objects.get(store=store, cart="a")
    assert (fact.campaign_id, fact.score, fact.enrolled_abandoned_at) == (None, None, at(2))
