"""Abandonment features: a pure incremental fold plus the cart state, read at an injected ``now``.

Pure: no database (pytest-django refuses DB access here), no clock.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from carts import event_types
from carts.errors import EventInvalid
from carts.projections import Cart, FoldEvent, fold
from recovery import features as F
from recovery.features import (
    CATEGORICAL,
    FEATURES,
    SPECIALISTS,
    Context,
    accumulator_apply,
    accumulator_empty,
    features_at,
    shopper_key,
)

T0 = datetime(2026, 11, 4, 12, 0, tzinfo=UTC)  # a Wednesday
DOCS = Path(__file__).resolve().parents[2] / "docs" / "features.md"


def ev(
    type: str, data: Mapping[str, Any] | None = None, *, at: float = 0, shopper: Any = None
) -> FoldEvent:
    return FoldEvent(type, data or {}, T0 + timedelta(seconds=at), shopper)


def add(
    sku: str, quantity: int = 1, unit_price: int = 1000, *, at: float = 0, shopper=None, **kw
) -> FoldEvent:
    data = {"sku": sku, "name": f"Product {sku}", "quantity": quantity, "unit_price": unit_price}
    return ev("cart.item_added", {**data, "currency": "EUR", **kw}, at=at, shopper=shopper)


def view(page_type: str = "product", *, at: float = 0, **data: Any) -> FoldEvent:
    return ev("page.viewed", {"url": f"/{page_type}", "page_type": page_type, **data}, at=at)


def remove(sku: str, *, at: float = 0) -> FoldEvent:
    return ev("cart.item_removed", {"sku": sku}, at=at)


def change(sku: str, quantity: int, *, at: float = 0) -> FoldEvent:
    return ev("cart.item_quantity_changed", {"sku": sku, "quantity": quantity}, at=at)


def exit_intent(trigger: str, *, at: float = 0) -> FoldEvent:
    return ev("shopper.exit_intent", {"trigger": trigger}, at=at)


def quote(amount: int, *, at: float = 0) -> FoldEvent:
    return ev("checkout.shipping_quoted", {"amount": amount}, at=at)


def contact(email: str = "ann@example.com", *, at: float = 0, **data: Any) -> FoldEvent:
    return ev("checkout.contact_captured", {"email": email, **data}, at=at)


def accumulate(events: Sequence[FoldEvent], *, round_trip: bool = False) -> dict[str, Any]:
    acc = accumulator_empty()
    for event in events:
        if round_trip:  # stored in a jsonb column between appends
            acc = json.loads(json.dumps(acc))
        acc = accumulator_apply(acc, event)
    return acc


def vector(
    events: Sequence[FoldEvent],
    *,
    now: datetime | float = 0,
    context: Context | None = None,
    round_trip: bool = False,
) -> dict[str, Any]:
    moment = now if isinstance(now, datetime) else T0 + timedelta(seconds=now)
    acc = accumulate(events, round_trip=round_trip)
    return features_at(acc, fold(events), moment, context or Context())


def picked(events: Sequence[FoldEvent], names: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
    result = vector(events, **kw)
    return {name: result[name] for name in names}


# The whole vector -----------------------------------------------------------------------------


def test_the_vector_of_an_empty_cart():
    assert features_at(accumulator_empty(), Cart(), T0, Context()) == {
        "basket_value": 0,
        "distinct_items": 0,
        "item_count": 0,
        "max_unit_price": None,
        "mean_unit_price": None,
        "category_count": 0,
        "value_vs_typical_basket": None,
        "item_adds": 0,
        "item_removals": 0,
        "quantity_changes": 0,
        "removals_per_add": None,
        "page_views": 0,
        "product_views": 0,
        "session_length_s": None,
        "product_dwell_total_s": 0.0,
        "product_dwell_mean_s": None,
        "last_page_type": "none",
        "checkout_started": False,
        "contact_captured": False,
        "shipping_quoted": False,
        "seconds_since_checkout_started": None,
        "coupons_rejected": 0,
        "shipping_cost_ratio": None,
        "removals_after_shipping_quote": 0,
        "seconds_since_last_activity": None,
        "exit_intents": 0,
        "last_exit_trigger": "none",
        "seconds_since_last_exit_intent": None,
        "local_hour": 12,
        "local_weekend": False,
        "timezone_source": "utc",
        "shopper_known": False,
        "past_orders": None,
        "past_abandonments": None,
        "past_conversion_rate": None,
        "device": "unknown",
        "multi_device": False,
    }


SHOPPER = {"id": "u-7", "timezone": "Europe/Paris"}
JOURNEY = [
    ev("page.viewed", {"url": "/", "page_type": "home", "device": "mobile"}, shopper=SHOPPER),
    view(sku="A", dwell_ms=12_000, device="mobile", at=10),
    add("A", 2, 1500, category="mugs", at=30),
    view(sku="B", device="desktop", at=40),  # no dwell_ms: lasts until the next activity
    add("B", 1, 3000, category="tea", at=100),
    change("A", 3, at=110),
    ev("recovery.offer_shown", {"offer": "free-shipping"}, at=120),
    ev("coupon.rejected", {"code": "WELCOME", "reason": "expired"}, at=130),
    ev("checkout.started", at=150),
    contact("Ann@Example.com", timezone="America/New_York", at=160),
    quote(1125, at=170),
    remove("B", at=200),
    exit_intent("mouse_leave", at=230),
]
JOURNEY_CONTEXT = Context(typical_basket=9000, past_orders=1, past_abandonments=3)


def test_the_vector_of_a_journey():
    assert vector(JOURNEY, now=300, context=JOURNEY_CONTEXT) == {
        "basket_value": 4500,
        "distinct_items": 1,
        "item_count": 3,
        "max_unit_price": 1500,
        "mean_unit_price": 1500.0,
        "category_count": 1,
        "value_vs_typical_basket": 0.5,
        "item_adds": 2,
        "item_removals": 1,
        "quantity_changes": 1,
        "removals_per_add": 0.5,
        "page_views": 3,
        "product_views": 2,
        "session_length_s": 230.0,
        "product_dwell_total_s": 72.0,
        "product_dwell_mean_s": 36.0,
        "last_page_type": "product",
        "checkout_started": True,
        "contact_captured": True,
        "shipping_quoted": True,
        "seconds_since_checkout_started": 150.0,
        "coupons_rejected": 1,
        "shipping_cost_ratio": 0.25,
        "removals_after_shipping_quote": 1,
        "seconds_since_last_activity": 70.0,
        "exit_intents": 1,
        "last_exit_trigger": "mouse_leave",
        "seconds_since_last_exit_intent": 70.0,
        "local_hour": 7,  # 12:05 UTC is 07:05 in New York (EST): the contact form's zone wins
        "local_weekend": False,
        "timezone_source": "contact",
        "shopper_known": True,
        "past_orders": 1,
        "past_abandonments": 3,
        "past_conversion_rate": 0.25,
        "device": "desktop",
        "multi_device": True,
    }


def test_values_have_the_kind_their_feature_declares():
    result = vector(JOURNEY, now=300, context=JOURNEY_CONTEXT)
    assert list(result) == [f.name for f in FEATURES]
    for name, value in result.items():
        if name in CATEGORICAL:
            assert isinstance(value, str | bool), name
        else:
            assert value is None or (isinstance(value, int | float) and not isinstance(value, bool))


# Each feature on small sequences --------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "now", "context", "expected"),
    [
        pytest.param(
            [add("A", 2, 1000, category="mugs"), add("B", 1, 2500, category="tea")],
            0,
            Context(typical_basket=9000),
            {
                "basket_value": 4500,
                "distinct_items": 2,
                "item_count": 3,
                "max_unit_price": 2500,
                "mean_unit_price": 1500.0,
                "category_count": 2,
                "value_vs_typical_basket": 0.5,
            },
            id="basket-composition",
        ),
        pytest.param(
            [add("A", category="mugs"), add("B", category="mugs"), add("C")],
            0,
            Context(),
            {"category_count": 1, "value_vs_typical_basket": None},
            id="one-category-and-typical-basket-unknown",
        ),
        pytest.param(
            [add("A"), add("B")],
            0,
            Context(typical_basket=0),
            {"category_count": None, "value_vs_typical_basket": None},
            id="no-categories-sent-and-typical-basket-zero",
        ),
        pytest.param(
            [add("A", 2, 1000), remove("A")],
            0,
            Context(typical_basket=500),
            {
                "basket_value": 0,
                "item_count": 0,
                "max_unit_price": None,
                "mean_unit_price": None,
                "category_count": 0,
                "value_vs_typical_basket": 0.0,
            },
            id="emptied-cart",
        ),
        pytest.param(
            [add("A"), add("B"), remove("A"), change("B", 3), change("B", 0), add("A")],
            0,
            Context(),
            {"item_adds": 3, "item_removals": 2, "quantity_changes": 1, "removals_per_add": 2 / 3},
            id="adds-removals-quantity-changes",
        ),
        pytest.param(
            [remove("A")],
            0,
            Context(),
            {"item_adds": 0, "item_removals": 1, "removals_per_add": None},
            id="removal-without-adds",
        ),
        pytest.param(
            [view("home"), view(sku="A", dwell_ms=4000, at=10), view(at=20), add("A", at=50)],
            60,
            Context(),
            {
                "page_views": 3,
                "product_views": 2,
                "session_length_s": 50.0,
                "product_dwell_total_s": 34.0,  # 4 s sent + 30 s to the next event
                "product_dwell_mean_s": 17.0,
                "last_page_type": "product",
            },
            id="page-views-and-dwell",
        ),
        pytest.param(
            [view(at=0), add("A", at=7200)],
            7200,
            Context(),
            {"product_dwell_total_s": 1800.0, "product_dwell_mean_s": 1800.0},
            id="inferred-dwell-capped-at-30-minutes",
        ),
        pytest.param(
            [view("search"), view(at=10)],
            600,
            Context(),
            {
                "product_dwell_total_s": 0.0,
                "product_dwell_mean_s": None,
                "last_page_type": "product",
            },
            id="last-product-view-not-counted-until-the-next-event",
        ),
        pytest.param(
            [
                add("A", 1, 2000),
                ev("order.placed", {"order_id": "O-1", "total": 2000, "currency": "EUR"}, at=1),
                view(at=10),
                ev("recovery.offer_shown", at=15),
                ev("order.refunded", {"order_id": "O-1", "amount": 500}, at=16),
                ev("checkout.started", at=30),
            ],
            40,
            Context(),
            {
                "product_dwell_total_s": 20.0,
                "page_views": 1,
                "seconds_since_last_activity": 10.0,
            },
            id="system-events-and-refunds-are-not-activity",
        ),
        pytest.param(
            [view(at=100), add("A", at=40)],
            100,
            Context(),
            {"product_dwell_total_s": 0.0, "product_dwell_mean_s": 0.0, "session_length_s": 60.0},
            id="out-of-order-times-give-no-negative-dwell",
        ),
        pytest.param(
            [view("cart", dwell_ms=9000)],
            10,
            Context(),
            {"product_dwell_total_s": 0.0, "product_views": 0, "session_length_s": 0.0},
            id="dwell-on-other-pages-is-not-product-dwell",
        ),
        pytest.param(
            [add("A", at=0), ev("checkout.started", at=100), contact(at=200), quote(500, at=300)],
            400,
            Context(),
            {
                "checkout_started": True,
                "contact_captured": True,
                "shipping_quoted": True,
                "seconds_since_checkout_started": 300.0,
            },
            id="checkout-progress",
        ),
        pytest.param(
            [ev("checkout.started", at=100), ev("checkout.started", at=200)],
            250,
            Context(),
            {"checkout_started": True, "contact_captured": False, "shipping_quoted": False},
            id="checkout-started-only",
        ),
        pytest.param(
            [ev("checkout.started", at=100), ev("checkout.started", at=200)],
            250,
            Context(),
            {"seconds_since_checkout_started": 150.0},
            id="checkout-started-counts-from-the-first",
        ),
        pytest.param(
            [
                ev("coupon.rejected", {"code": "A"}),
                ev("coupon.rejected", {"code": "B", "reason": "expired"}),
            ],
            0,
            Context(),
            {"coupons_rejected": 2},
            id="coupons-rejected",
        ),
        pytest.param(
            [add("A", 1, 4000), quote(500), quote(1000)],
            0,
            Context(),
            {"shipping_cost_ratio": 0.25},
            id="shipping-shock-uses-the-latest-quote",
        ),
        pytest.param(
            [add("A", 1, 4000), quote(0)],
            0,
            Context(),
            {"shipping_cost_ratio": 0.0, "shipping_quoted": True},
            id="free-shipping",
        ),
        pytest.param(
            [quote(700)],
            0,
            Context(),
            {"shipping_cost_ratio": None},
            id="shipping-quote-on-an-empty-cart",
        ),
        pytest.param(
            [add("A"), add("B"), add("C"), remove("A"), quote(500), remove("B"), change("C", 0)],
            0,
            Context(),
            {"removals_after_shipping_quote": 2, "item_removals": 3},
            id="removals-after-the-quote",
        ),
        pytest.param(
            [add("A", at=0), view(at=30), ev("recovery.offer_shown", at=80)],
            90,
            Context(),
            {"seconds_since_last_activity": 60.0, "session_length_s": 30.0},
            id="time-since-last-activity-ignores-system-events",
        ),
        pytest.param(
            [add("A", at=30)],
            10,
            Context(),
            {"seconds_since_last_activity": 0.0},
            id="a-future-event-time-gives-zero-not-negative",
        ),
        pytest.param(
            [exit_intent("mouse_leave", at=10), exit_intent("tab_hidden", at=20)],
            50,
            Context(),
            {
                "exit_intents": 2,
                "last_exit_trigger": "tab_hidden",
                "seconds_since_last_exit_intent": 30.0,
            },
            id="exit-intents",
        ),
        pytest.param(
            [exit_intent("tab_hidden", at=20), exit_intent("idle", at=10)],
            50,
            Context(),
            {"last_exit_trigger": "tab_hidden", "seconds_since_last_exit_intent": 30.0},
            id="latest-exit-intent-by-time",
        ),
        pytest.param(
            [add("A")],
            0,
            Context(past_orders=3, past_abandonments=1),
            {
                "shopper_known": False,
                "past_orders": 3,
                "past_abandonments": 1,
                "past_conversion_rate": 0.75,
            },
            id="history-from-context",
        ),
        pytest.param(
            [ev("page.viewed", {"url": "/", "page_type": "home"}, shopper={"id": "u-1"})],
            0,
            Context(past_orders=0, past_abandonments=0),
            {"shopper_known": True, "past_conversion_rate": None},
            id="known-shopper-without-history",
        ),
        pytest.param(
            [contact()],
            0,
            Context(past_orders=2),
            {"shopper_known": True, "past_orders": 2, "past_conversion_rate": None},
            id="known-by-email-history-partly-unknown",
        ),
        pytest.param(
            [view("home"), view(device="mobile"), view("cart")],
            0,
            Context(),
            {"device": "mobile", "multi_device": False},
            id="device-from-the-views-that-name-one",
        ),
        pytest.param(
            [view(device="mobile"), view(device="desktop"), view(device="mobile")],
            0,
            Context(),
            {"device": "mobile", "multi_device": True},
            id="device-switch",
        ),
    ],
)
def test_feature(events, now, context, expected):
    assert picked(events, expected, now=now, context=context) == expected


# Local time -----------------------------------------------------------------------------------

FRIDAY_2330_UTC = datetime(2026, 11, 6, 23, 30, tzinfo=UTC)
SUNDAY_2330_UTC = datetime(2026, 11, 8, 23, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("events", "now", "expected"),
    [
        pytest.param([add("A")], FRIDAY_2330_UTC, (23, False, "utc"), id="no-zone-utc"),
        pytest.param(
            [
                ev(
                    "page.viewed",
                    {"url": "/", "page_type": "home"},
                    shopper={"timezone": "Asia/Tokyo"},
                )
            ],
            FRIDAY_2330_UTC,
            (8, True, "envelope"),  # Saturday 08:30 in Tokyo
            id="tokyo-is-already-saturday",
        ),
        pytest.param(
            [
                ev(
                    "page.viewed",
                    {"url": "/", "page_type": "home"},
                    shopper={"timezone": "Asia/Tokyo"},
                )
            ],
            SUNDAY_2330_UTC,
            (8, False, "envelope"),  # Monday 08:30 in Tokyo
            id="tokyo-is-already-monday",
        ),
        pytest.param([add("A")], SUNDAY_2330_UTC, (23, True, "utc"), id="sunday-in-utc"),
        pytest.param(
            [
                ev("checkout.started", shopper={"timezone": "Asia/Tokyo"}),
                contact(timezone="America/New_York"),
            ],
            FRIDAY_2330_UTC,
            (18, False, "contact"),  # the contact form's zone wins, as in the cart state
            id="contact-zone-wins",
        ),
        pytest.param(
            [
                contact(timezone="America/New_York"),
                ev("checkout.started", shopper={"timezone": "Asia/Tokyo"}),
            ],
            FRIDAY_2330_UTC,
            (18, False, "contact"),
            id="envelope-does-not-replace-a-known-zone",
        ),
        pytest.param(
            [ev("checkout.started", shopper={"timezone": "Mars/Olympus_Mons"})],
            FRIDAY_2330_UTC,
            (23, False, "utc"),
            id="unknown-zone-falls-back-to-utc",
        ),
    ],
)
def test_local_time(events, now, expected):
    result = vector(events, now=now)
    assert (result["local_hour"], result["local_weekend"], result["timezone_source"]) == expected


def test_time_features_depend_on_now_only_through_the_argument():
    acc, cart = accumulate(JOURNEY), fold(JOURNEY)

    early = features_at(acc, cart, T0 + timedelta(seconds=230), Context())
    late = features_at(acc, cart, T0 + timedelta(hours=10), Context())

    assert early["seconds_since_last_activity"] == 0.0
    assert late["seconds_since_last_activity"] == 10 * 3600 - 230.0
    assert late["seconds_since_checkout_started"] == 10 * 3600 - 150.0
    assert (early["local_hour"], late["local_hour"]) == (7, 17)
    same = {"seconds_since_last_activity", "seconds_since_checkout_started"}
    same |= {"seconds_since_last_exit_intent", "local_hour"}
    assert {k: v for k, v in early.items() if k not in same} == {
        k: v for k, v in late.items() if k not in same
    }
    assert features_at(acc, cart, T0 + timedelta(hours=10), Context()) == late


# The accumulator ------------------------------------------------------------------------------


def test_incremental_with_json_round_trips_equals_batch():
    events = [*JOURNEY, add("C", 4, 250, at=240), view(device="tablet", at=250), add("D", at=260)]

    batch = accumulate(events)
    incremental = accumulate(events, round_trip=True)

    assert incremental == batch
    assert json.loads(json.dumps(batch)) == batch
    assert vector(events, now=400, round_trip=True) == vector(events, now=400)


def test_each_prefix_of_the_journey_is_the_same_incrementally():
    for end in range(len(JOURNEY) + 1):
        prefix = JOURNEY[:end]
        assert vector(prefix, now=300, round_trip=True) == vector(prefix, now=300), end


SYSTEM_EVENTS = [
    ev("recovery.offer_shown", {"offer": "10%"}, at=5),
    ev("campaign.email_sent", {"step": 1}, at=999),
    ev("recovery.score_computed", {"score": 0.7}, at=-50, shopper={"id": "ignored"}),
    ev("page.scrolled", {"depth": 80}, at=3),  # a type this version does not know
]


def by_position(pair: tuple[int, FoldEvent]) -> int:
    return -pair[0]  # insert from the back, so earlier positions stay put


@pytest.mark.parametrize("positions", [(0, 0, 0, 0), (1, 4, 7, 13), (13, 13, 2, 5), (3, 9, 0, 11)])
def test_unknown_and_system_events_change_nothing_wherever_they_fall(positions):
    events = list(JOURNEY)
    for position, extra in sorted(zip(positions, SYSTEM_EVENTS, strict=True), key=by_position):
        events.insert(position, extra)

    with_extras = accumulate(events, round_trip=True)

    assert with_extras == accumulate(JOURNEY)
    assert features_at(with_extras, fold(JOURNEY), T0 + timedelta(seconds=300), Context()) == (
        vector(JOURNEY, now=300)
    )


def test_apply_returns_a_new_dict_and_leaves_its_input_alone():
    acc = accumulate(JOURNEY[:3])
    before = copy.deepcopy(acc)

    after = accumulator_apply(acc, view(device="tablet", at=60))
    unchanged = accumulator_apply(acc, ev("recovery.offer_shown"))

    assert acc == before
    assert after is not acc and after["devices"] is not acc["devices"]
    assert after["devices"] == ["mobile", "tablet"]
    assert unchanged == acc and unchanged is not acc


def test_accumulator_stays_small_after_10_000_events():
    cycle = [
        view(sku="A", device="mobile"),
        view("search", device="desktop"),
        view(),
        add("A"),
        change("A", 3),
        remove("A"),
        ev("coupon.rejected", {"code": "X"}),
        ev("checkout.started"),
        contact(timezone="Asia/Tokyo"),
        quote(300),
        exit_intent("idle"),
        ev("recovery.offer_shown", {"offer": "x" * 100}),
    ]
    events = [
        FoldEvent(e.type, e.data, T0 + timedelta(seconds=i), {"id": "u-1"})
        for i, e in enumerate(cycle[i % len(cycle)] for i in range(10_000))
    ]

    hundred = json.dumps(accumulate(events[:100]))
    acc = accumulate(events)

    assert set(acc) == set(accumulator_empty())
    assert len(json.dumps(acc)) < 1000
    assert len(json.dumps(acc)) - len(hundred) < 40  # a few more digits in counters, nothing else
    assert (acc["adds"], acc["page_views"], acc["devices"]) == (834, 2502, ["desktop", "mobile"])


def test_an_older_accumulator_missing_keys_still_folds():
    older = {k: v for k, v in accumulate(JOURNEY[:4]).items() if k not in {"devices", "device"}}

    acc = accumulator_apply(older, view(device="tablet", at=60))

    assert (acc["devices"], acc["device"], acc["page_views"]) == (["tablet"], "tablet", 4)


# Identity -------------------------------------------------------------------------------------

ANN = "email:" + hashlib.sha256(b"ann@example.com").hexdigest()


@pytest.mark.parametrize(
    ("events", "key"),
    [
        pytest.param([], None, id="nothing"),
        pytest.param([add("A"), view()], None, id="anonymous"),
        pytest.param([ev("page.viewed", shopper={"id": "u-42"})], "id:u-42", id="id"),
        pytest.param([ev("checkout.started", shopper={"id": 42})], "id:42", id="numeric-id"),
        pytest.param([contact("Ann@Example.COM")], ANN, id="contact-email-lower-cased"),
        pytest.param([ev("page.viewed", shopper={"email": "ANN@example.com"})], ANN, id="envelope"),
        pytest.param(
            [add("A", shopper={"email": "bob@example.com"}), contact("ann@example.com")],
            ANN,
            id="contact-email-wins",
        ),
        pytest.param(
            [contact("ann@example.com"), ev("page.viewed", shopper={"email": "bob@example.com"})],
            ANN,
            id="envelope-does-not-replace-a-known-email",
        ),
        pytest.param(
            [contact("ann@example.com"), ev("page.viewed", shopper={"id": "u-9"})],
            "id:u-9",
            id="id-wins-over-email",
        ),
        pytest.param(
            [ev("recovery.offer_shown", shopper={"id": "u-9"})], None, id="system-event-envelope"
        ),
    ],
)
def test_shopper_key(events, key):
    assert shopper_key(accumulate(events, round_trip=True)) == key


def test_shopper_key_is_the_same_whatever_the_email_case():
    upper, lower = (
        accumulate([contact("ANN@EXAMPLE.COM")]),
        accumulate([contact("ann@example.com")]),
    )
    assert shopper_key(upper) == shopper_key(lower) == ANN


# The catalogue --------------------------------------------------------------------------------


def test_specialists_cover_every_feature_exactly_once():
    grouped = [name for names in SPECIALISTS.values() for name in names]

    assert len(SPECIALISTS) >= 6
    assert all(SPECIALISTS.values())
    assert sorted(grouped) == sorted(f.name for f in FEATURES)
    assert len(grouped) == len(set(grouped))
    assert {f.name: f.specialist for f in FEATURES} == {
        name: specialist for specialist, names in SPECIALISTS.items() for name in names
    }


def test_categorical_matches_the_declared_kinds():
    assert {f.kind for f in FEATURES} == {"numeric", "categorical"}
    assert frozenset(f.name for f in FEATURES if f.kind == "categorical") == CATEGORICAL


def documented() -> dict[str, tuple[str, str]]:
    """``docs/features.md``'s summary table: name -> (specialist, kind)."""
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (\w+) \|", DOCS.read_text(), flags=re.MULTILINE)
    return {name: (specialist, kind) for name, specialist, kind in rows}


def test_docs_list_every_feature_with_its_specialist_and_kind():
    assert documented() == {f.name: (f.specialist, f.kind) for f in FEATURES}
    assert {
        name for name, (_, kind) in documented().items() if kind == "categorical"
    } == CATEGORICAL
    text = DOCS.read_text()
    for f in FEATURES:
        assert f"\n### `{f.name}`\n" in text, f.name


# The page.viewed device field -----------------------------------------------------------------


def test_page_viewed_takes_an_optional_device():
    sent = {"url": "/p/a", "page_type": "product", "device": "tablet"}

    assert event_types.validate("page.viewed", None, sent) == (1, sent)
    assert event_types.validate("page.viewed", 1, {"url": "/", "page_type": "home"}) == (
        1,
        {"url": "/", "page_type": "home"},
    )
    with pytest.raises(EventInvalid) as caught:
        event_types.validate("page.viewed", None, {**sent, "device": "phone"})
    assert caught.value.detail == {
        "data": {"device": ["Input should be 'desktop', 'mobile' or 'tablet'."]}
    }


def test_the_pure_module_knows_the_same_devices_and_triggers_as_the_schemas():
    assert F._DEVICES == event_types.DEVICES
    assert F._EXIT_TRIGGERS == event_types.EXIT_TRIGGERS
