"""The training-example replay (recovery/examples.py): pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carts.projections import FoldEvent
from recovery import examples, features
from recovery.durations import parse_duration

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HORIZON = timedelta(hours=24)
FAR = T0 + timedelta(days=30)


def ev(kind: str, minutes: float, data: dict | None = None, shopper: dict | None = None):
    return FoldEvent(kind, data or {}, T0 + timedelta(minutes=minutes), shopper)


def add(minutes: float, sku: str = "A", price: int = 1000, shopper: dict | None = None):
    return ev(
        "cart.item_added",
        minutes,
        {"sku": sku, "name": sku, "quantity": 1, "unit_price": price, "currency": "EUR"},
        shopper,
    )


def order(minutes: float, total: int = 1000):
    return ev("order.placed", minutes, {"order_id": "o", "total": total, "currency": "EUR"})


def build(pairs, now=FAR, offsets=examples.SNAPSHOT_OFFSETS):
    return examples.examples_build(
        pairs, horizon=HORIZON, now=now, typical_basket=1000, offsets=offsets
    )


def test_converted_cart_snapshots_before_the_order_are_negative():
    got = build([("c", add(0)), ("c", ev("checkout.started", 5)), ("c", order(8))])
    # Snapshots at 0 and 5 minutes; the quiet ones (10 min, 1 h, 6 h later) come after the
    # next event or the order, so there are none.
    assert [(e.at, e.label) for e in got] == [(T0, 0), (T0 + timedelta(minutes=5), 0)]
    assert [e.weight for e in got] == [0.5, 0.5]
    assert got[1].features["checkout_started"] is True


def test_abandoned_cart_gets_quiet_snapshots_and_positive_labels():
    got = build([("c", add(0))])
    assert [(e.at - T0, e.label) for e in got] == [
        (timedelta(0), 1),
        (timedelta(minutes=10), 1),
        (timedelta(hours=1), 1),
        (timedelta(hours=6), 1),
    ]
    assert sum(e.weight for e in got) == pytest.approx(1.0)
    # The quiet snapshots see the time since the last activity.
    assert [e.features["seconds_since_last_activity"] for e in got] == [0, 600, 3600, 21600]


def test_order_beyond_the_horizon_counts_as_abandoned_at_that_horizon():
    got = build([("c", add(0)), ("c", order(60 * 31))])  # ordered 31 h later
    assert [e.label for e in got] == [1, 1, 1, 1]
    # 26 h later: beyond the horizon of the first three snapshots, within that of the 6 h one.
    got = build([("c", add(0)), ("c", order(60 * 26))])
    assert [e.label for e in got] == [1, 1, 1, 0]
    got = build([("c", add(0)), ("c", order(60 * 20))])  # 20 h later: within 24 h
    assert {e.label for e in got} == {0}


def test_carts_still_inside_the_horizon_are_excluded():
    now = T0 + timedelta(hours=3)
    got = build([("c", add(0))], now=now)
    assert got == []  # none of its snapshots has seen 24 h pass without an order
    # But a cart that already converted is labelled however recent it is.
    got = build([("d", add(0)), ("d", order(5))], now=now)
    assert [e.label for e in got] == [0]


def test_events_after_the_order_are_not_snapshotted():
    got = build(
        [
            ("c", add(0)),
            ("c", order(1)),
            ("c", ev("page.viewed", 2, {"url": "/", "page_type": "home"})),
        ]
    )
    assert [e.at for e in got] == [T0]


def test_each_cart_weighs_one_however_long():
    pairs = [("long", add(i, sku=f"s{i}")) for i in range(100)] + [("short", add(0, sku="x"))]
    got = build(pairs)
    per_cart: dict[str, float] = {}
    for e in got:
        per_cart[e.cart] = per_cart.get(e.cart, 0.0) + e.weight
    assert per_cart == pytest.approx({"long": 1.0, "short": 1.0})
    assert sum(e.cart == "long" for e in got) == examples.MAX_SNAPSHOTS_PER_CART


def test_shopper_history_is_taken_when_the_shopper_becomes_known():
    who = {"id": "u1"}
    pairs = [
        ("old1", add(0, shopper=who)),
        ("old1", order(1)),
        ("old2", add(2, shopper=who)),  # abandoned
        ("old3", add(3, shopper={"id": "someone-else"})),
        ("new", add(10, shopper=who)),
    ]
    got = [e for e in build(pairs) if e.cart == "new"]
    assert got[0].features["past_orders"] == 1
    assert got[0].features["past_abandonments"] == 1
    anonymous = [e for e in build([("anon", add(0))])]
    assert anonymous[0].features["past_orders"] is None


def test_the_replay_knows_a_shopper_by_id_else_by_email_case_insensitive():
    """The replay keys history on features.shopper_key, as serving does."""
    by_id = [("a", add(0, shopper={"id": "42"})), ("a", order(1))]
    by_id += [("b", add(5, shopper={"id": "42"}))]
    assert next(e.features["past_orders"] for e in build(by_id) if e.cart == "b") == 1
    contact = "checkout.contact_captured"
    by_mail = [
        ("c", add(0)),
        ("c", ev(contact, 1, {"email": "Ann@Example.com"})),
        ("c", order(2)),
        ("d", add(5)),
        ("d", ev(contact, 6, {"email": "ann@example.com"})),
    ]
    d = [e for e in build(by_mail) if e.cart == "d"]
    assert d[0].features["past_orders"] is None  # not known yet at its first event
    assert d[-1].features["past_orders"] == 1
    assert features.shopper_key(features.accumulator_empty()) is None


def test_rejected_events_are_skipped_not_raised():
    bad = ev("cart.item_removed", 1, {"sku": "missing"})
    got = build([("c", add(0)), ("c", bad)])
    assert got  # the replay carried on


@pytest.mark.parametrize(
    ("text", "expected"),
    [("24h", timedelta(hours=24)), ("30m", timedelta(minutes=30)), ("7d", timedelta(days=7)),
     ("90s", timedelta(seconds=90)), ("1.5h", timedelta(minutes=90)), (" 2W ", timedelta(weeks=2))],
)  # fmt: skip
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "0h", "24 hours", "1y"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match=r"duration|positive"):
        parse_duration(text)
