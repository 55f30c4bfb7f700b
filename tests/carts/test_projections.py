"""Cart state as a pure fold: no database, no clock (pytest-django refuses DB access here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from carts.projections import (
    ACTIVE,
    CHECKOUT,
    CONVERTED,
    Cart,
    FoldEvent,
    Line,
    Rejected,
    apply,
    fold,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def ev(type: str, data: Mapping[str, Any] | None = None, *, at: int = 0, shopper=None) -> FoldEvent:
    return FoldEvent(type, data or {}, T0 + timedelta(seconds=at), shopper)


def add(
    sku: str, quantity: int = 1, unit_price: int = 1000, currency: str = "EUR", **kw
) -> FoldEvent:
    data = {"sku": sku, "name": f"Product {sku}", "quantity": quantity, "unit_price": unit_price}
    return ev("cart.item_added", {**data, "currency": currency, **kw})


def remove(sku: str, quantity: int | None = None) -> FoldEvent:
    return ev("cart.item_removed", {"sku": sku, **({"quantity": quantity} if quantity else {})})


def change(sku: str, quantity: int) -> FoldEvent:
    return ev("cart.item_quantity_changed", {"sku": sku, "quantity": quantity})


def placed(
    total: int = 2000, currency: str = "EUR", order_id: str = "O-1", at: int = 0
) -> FoldEvent:
    return ev("order.placed", {"order_id": order_id, "total": total, "currency": currency}, at=at)


def refunded(amount: int, currency: str | None = None) -> FoldEvent:
    data: dict[str, Any] = {"order_id": "O-1", "amount": amount}
    if currency:
        data["currency"] = currency
    return ev("order.refunded", data)


def lines(cart: Cart) -> list[tuple[str, int, int]]:
    return [(line.sku, line.quantity, line.unit_price) for line in cart.lines]


# Lines: add, remove, change quantity ------------------------------------------------------------

LINE_CASES = {
    "add one item": ([add("A", 2, 1250)], [("A", 2, 1250)], 2500, 2),
    "add two items keeps their order": (
        [add("B", 1, 500), add("A", 1, 300)],
        [("B", 1, 500), ("A", 1, 300)],
        800,
        2,
    ),
    "same sku again adds up, latest price wins": (
        [add("A", 1, 1000), add("A", 2, 900)],
        [("A", 3, 900)],
        2700,
        3,
    ),
    "remove some of a line": ([add("A", 3), remove("A", 1)], [("A", 2, 1000)], 2000, 2),
    "remove without a quantity removes the line": (
        [add("A", 3), add("B"), remove("A")],
        [("B", 1, 1000)],
        1000,
        1,
    ),
    "remove more than there is removes the line": ([add("A", 2), remove("A", 5)], [], 0, 0),
    "remove an absent sku changes nothing": ([add("A"), remove("Z")], [("A", 1, 1000)], 1000, 1),
    "change quantity": ([add("A", 1, 700), change("A", 4)], [("A", 4, 700)], 2800, 4),
    "change quantity to zero removes the line": (
        [add("A"), add("B"), change("A", 0)],
        [("B", 1, 1000)],
        1000,
        1,
    ),
    "zero for an absent sku changes nothing": (
        [add("A"), change("Z", 0)],
        [("A", 1, 1000)],
        1000,
        1,
    ),
    "free item": ([add("A", 2, 0)], [("A", 2, 0)], 0, 2),
}


@pytest.mark.parametrize(
    ("events", "expected_lines", "value", "count"), LINE_CASES.values(), ids=LINE_CASES.keys()
)
def test_lines_value_and_item_count(events, expected_lines, value, count):
    cart = fold(events)

    assert lines(cart) == expected_lines
    assert (cart.value, cart.item_count) == (value, count)
    assert cart.version == len(events)


def test_line_keeps_the_optional_fields_of_its_first_add():
    cart = fold(
        [
            add(
                "A",
                category="Mugs",
                url="https://shop.example/a",
                image_url="https://cdn.example/a.jpg",
            ),
            add("A", category="Other"),
        ]
    )

    assert cart.lines == (
        Line(
            "A", "Product A", 2, 1000, "Mugs", "https://shop.example/a", "https://cdn.example/a.jpg"
        ),
    )


# Rejections ------------------------------------------------------------------------------------

REJECTED = {
    "item in another currency": ([add("A", currency="EUR")], add("B", currency="USD"), "currency"),
    "quantity for an absent sku": ([add("A")], change("Z", 2), "sku"),
    "order in another currency": ([add("A", currency="EUR")], placed(currency="GBP"), "currency"),
    "shipping in another currency": (
        [add("A", currency="EUR")],
        ev("checkout.shipping_quoted", {"amount": 500, "currency": "USD"}),
        "currency",
    ),
    "refund without an order": ([add("A")], refunded(100), "order_id"),
    "refund over the order total": ([add("A"), placed(total=2000)], refunded(2001), "amount"),
    "refunds adding up over the total": (
        [add("A"), placed(total=2000), refunded(1500)],
        refunded(501),
        "amount",
    ),
    "refund in another currency": (
        [add("A"), placed(total=2000)],
        refunded(100, "USD"),
        "currency",
    ),
}


@pytest.mark.parametrize(("history", "event", "field"), REJECTED.values(), ids=REJECTED.keys())
def test_events_that_cannot_apply_are_rejected(history, event, field):
    # given a cart
    cart = fold(history)

    # when an event that cannot apply to it comes
    with pytest.raises(Rejected) as rejected:
        apply(cart, event)

    # then it is rejected on the field at fault (and the cart, being immutable, is unchanged)
    assert rejected.value.field == field
    assert cart == fold(history)


def test_currency_mismatch_message_names_both_currencies():
    with pytest.raises(Rejected, match=r"^Cart is in EUR; this event is in USD\.$"):
        fold([add("A", currency="EUR"), add("B", currency="USD")])


ACCEPTED_MONEY = {
    "first item sets the currency": ([add("A", currency="JPY")], "JPY"),
    "shipping without a currency keeps the cart's": (
        [add("A"), ev("checkout.shipping_quoted", {"amount": 500})],
        "EUR",
    ),
    "shipping sets the currency of an empty cart": (
        [ev("checkout.shipping_quoted", {"amount": 500, "currency": "GBP"})],
        "GBP",
    ),
    "order sets the currency of an empty cart": ([placed(currency="CHF")], "CHF"),
}


@pytest.mark.parametrize(("events", "currency"), ACCEPTED_MONEY.values(), ids=ACCEPTED_MONEY.keys())
def test_cart_currency(events, currency):
    assert fold(events).currency == currency


def test_refunds_add_up_to_exactly_the_total():
    cart = fold([add("A", 2), placed(total=2000), refunded(1500), refunded(500, "EUR")])

    assert (cart.order_total, cart.refunded) == (2000, 2000)


# Status, checkout, contact, order ---------------------------------------------------------------

STATUS_CASES = {
    "new cart is active": ([add("A")], ACTIVE),
    "checkout started": ([add("A"), ev("checkout.started")], CHECKOUT),
    "items after checkout started stay in checkout": (
        [add("A"), ev("checkout.started"), add("B")],
        CHECKOUT,
    ),
    "order placed from checkout": ([add("A"), ev("checkout.started"), placed()], CONVERTED),
    "order placed straight from active": ([add("A"), placed()], CONVERTED),
    "checkout after the order stays converted": (
        [add("A"), placed(), ev("checkout.started")],
        CONVERTED,
    ),
    "refund keeps converted": ([add("A"), placed(), refunded(100)], CONVERTED),
}


@pytest.mark.parametrize(("events", "status"), STATUS_CASES.values(), ids=STATUS_CASES.keys())
def test_status_transitions(events, status):
    assert fold(events).status == status


def test_checkout_and_conversion_times_are_the_first_ones():
    cart = fold(
        [
            ev("checkout.started", at=10),
            ev("checkout.started", at=20),
            placed(order_id="O-1", at=30),
            placed(order_id="O-1", at=40),  # the same order again changes nothing
        ]
    )

    assert cart.checkout_started_at == T0 + timedelta(seconds=10)
    assert cart.converted_at == T0 + timedelta(seconds=30)
    assert (cart.order_id, cart.order_total) == ("O-1", 2000)
    assert cart.version == 4


def test_the_first_order_converts_the_cart_and_another_one_is_refused():
    first = fold([placed(order_id="O-1", at=30)])

    with pytest.raises(Rejected) as refused:
        apply(first, placed(order_id="O-2", total=3000, at=40))

    assert refused.value.field == "order_id"
    # The refused event changes nothing: the first order stands (a rebuild dead-letters the
    # second and folds on from this state: tests/carts/test_dead_letters.py).
    assert (first.order_id, first.order_total, first.version) == ("O-1", 2000, 1)


@pytest.mark.parametrize("type_", ["order.placed", "order.refunded"])
def test_a_browser_cannot_place_or_refund_an_order(type_):
    ordered = fold([placed(order_id="O-1", at=30)])
    data = {"order_id": "O-1", "amount": 100} if type_ == "order.refunded" else None
    event = placed(order_id="FAKE", total=10**12, at=40) if data is None else ev(type_, data)
    browser = replace(event, source="browser")

    with pytest.raises(Rejected) as refused:
        apply(Cart() if data is None else ordered, browser)

    assert refused.value.field == "type"
    target = Cart() if data is None else ordered
    assert apply(target, replace(event, source="server")).version == target.version + 1
    assert (ordered.status, ordered.order_id, ordered.refunded) == ("converted", "O-1", 0)


def test_a_browser_never_replaces_contact_details_a_trusted_source_gave():
    server = replace(ev("checkout.contact_captured", {"email": "ada@example.com"}), source="server")
    browser = replace(
        ev("checkout.contact_captured", {"email": "evil@example.net", "consent": {"email": True}}),
        source="browser",
    )
    cart = fold([server])
    assert (cart.email, cart.contact_source) == ("ada@example.com", "server")

    with pytest.raises(Rejected) as refused:
        apply(cart, browser)

    assert refused.value.field == "email"
    # A browser's own contact (no trusted one yet) can be given, and changed by the browser.
    own = fold([browser, replace(browser, data={"email": "ada@example.org"})])
    assert (own.email, own.contact_source) == ("ada@example.org", "browser")
    # The server's word replaces the browser's.
    assert apply(own, server).email == "ada@example.com"


def test_contact_captured_sets_contact_and_merges_consent():
    cart = fold(
        [
            ev(
                "checkout.contact_captured",
                {
                    "email": "ada@example.com",
                    "phone": "+44 20 7946 0000",
                    "consent": {"email": True, "sms": False},
                    "timezone": "Europe/London",
                    "locale": "en-GB",
                },
            ),
            ev("checkout.contact_captured", {"email": "ada@example.org", "consent": {"sms": True}}),
        ]
    )

    # A phone belongs to the address it came with (issue 13: erasing an address must not leave
    # its phone on a cart that shows another): another address without a phone has none.
    assert (cart.email, cart.phone, cart.timezone, cart.locale) == (
        "ada@example.org",
        "",
        "Europe/London",
        "en-GB",
    )
    assert cart.consent == {"email": True, "sms": True}


def test_shopper_fills_what_the_cart_does_not_know_yet():
    shopper = {"id": "u-1", "email": "first@example.com", "timezone": "Asia/Tokyo", "locale": "ja"}
    later = {"id": "u-2", "email": "later@example.com", "timezone": "UTC", "locale": "en"}

    cart = fold([ev("page.viewed", shopper=shopper), ev("page.viewed", shopper=later)])

    assert (cart.shopper_id, cart.email, cart.timezone, cart.locale) == (
        "u-2",
        "first@example.com",
        "Asia/Tokyo",
        "ja",
    )


def test_captured_contact_wins_over_the_shopper_email():
    cart = fold(
        [
            ev("page.viewed", shopper={"email": "shopper@example.com"}),
            ev("checkout.contact_captured", {"email": "typed@example.com"}),
        ]
    )

    assert cart.email == "typed@example.com"


# Activity times and versions --------------------------------------------------------------------

ACTIVITY_CASES = {
    "item added": ([ev("cart.item_added", add("A").data, at=5)], 5),
    "page view": ([ev("page.viewed", {"url": "/", "page_type": "home"}, at=7)], 7),
    "exit intent": ([ev("shopper.exit_intent", {"trigger": "idle"}, at=9)], 9),
    "order placed": ([placed(at=11)], 11),
    "late event does not move it back": (
        [ev("checkout.started", at=30), ev("page.viewed", at=20)],
        30,
    ),
    "refund is not activity": (
        [placed(at=10), ev("order.refunded", {"order_id": "O-1", "amount": 1}, at=50)],
        10,
    ),
    "system event is not activity": (
        [ev("page.viewed", at=10), ev("recovery.offer_shown", at=50)],
        10,
    ),
    "only system events": ([ev("recovery.offer_shown", at=50)], None),
}


@pytest.mark.parametrize(("events", "seconds"), ACTIVITY_CASES.values(), ids=ACTIVITY_CASES.keys())
def test_last_activity_is_the_latest_shopper_event(events, seconds):
    expected = None if seconds is None else T0 + timedelta(seconds=seconds)

    assert fold(events).last_activity_at == expected


def test_started_at_is_the_first_event_even_when_it_is_not_activity():
    cart = fold([ev("recovery.offer_shown", at=3), ev("page.viewed", at=8)])

    assert cart.started_at == T0 + timedelta(seconds=3)


def test_every_event_adds_one_version_even_when_nothing_else_changes():
    cart = Cart()
    for n, event in enumerate([add("A"), remove("Z"), ev("coupon.rejected", {"code": "X"})], 1):
        cart = apply(cart, event)
        assert cart.version == n


def test_fold_continues_from_a_given_state():
    events = [add("A"), add("B", 2, 300), ev("checkout.started"), remove("A")]

    assert fold(events[2:], fold(events[:2])) == fold(events)


def test_only_a_trusted_source_names_the_shopper():
    browser = replace(ev("page.viewed", shopper={"id": "cust-42"}), source="browser")
    server = replace(browser, source="server")

    assert apply(Cart(), browser).shopper_id == ""
    assert apply(Cart(), server).shopper_id == "cust-42"
