"""Shopify's webhooks through POST /api/v1/webhooks/shopify: every sample payload with a correct
signature gives its events and cart state; a wrong signature, a replayed delivery id, a truncated
body and a shuffled delivery order each keep the log as it should be."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from campaigns import coupons
from campaigns.models import Coupon, Tier
from carts import selectors as carts_selectors
from carts.models import CartEvent, CartState
from integrations import services
from integrations.models import Connection, InboundDelivery, PlatformCart, PlatformRef
from tests.campaigns.builders import campaign_with_tiers
from tests.integrations.conftest import (
    SHOP_DOMAIN,
    fixture_bytes,
    fixture_json,
    post_shopify,
)

CHECKOUT_CART = "shopify-cart-eeafa272cebfd4b22385bc4b645e762c"
ORDER_ID = "820982911946154508"  # beyond 2**53: a float would make it 820982911946154496
ORDER_CART = f"shopify-order-{ORDER_ID}"
CHECKOUT_AT = datetime(2022, 1, 1, 0, 0, tzinfo=UTC)  # 2021-12-31T19:00:00-05:00

# Every sample payload, with its topic.
SAMPLES = [
    ("checkouts/create", "checkouts_create.json"),
    ("checkouts/update", "checkouts_update.json"),
    ("checkouts/delete", "checkouts_delete.json"),
    ("carts/create", "carts_create.json"),
    ("carts/update", "carts_update.json"),
    ("orders/create", "orders_create.json"),
    ("checkouts/create", "anonymized_exemplars/2024-01_checkouts_1.json"),
    ("checkouts/update", "anonymized_exemplars/2024-04_checkouts_2.json"),
    ("orders/create", "anonymized_exemplars/2024-04_orders_1.json"),
]
READABLE = SAMPLES[:6]


def _events(store_id: int, cart: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (e.type, e.data) for e in carts_selectors.cart_events_list(store_id=store_id, token=cart)
    ]


def _stored(store_id: int) -> tuple[int, int, int, int]:
    """Counts of what deliveries leave behind: events, deliveries, refs, platform carts."""
    return (
        CartEvent.objects.filter(store_id=store_id).count(),
        InboundDelivery.objects.filter(store_id=store_id).count(),
        PlatformRef.objects.filter(store_id=store_id).count(),
        PlatformCart.objects.filter(store_id=store_id).count(),
    )


def _state(store_id: int, cart: str) -> tuple[Any, ...]:
    s = CartState.objects.get(store_id=store_id, token=cart)
    return (s.status, s.currency, s.items, s.value, s.email, s.consent, s.order_id, s.order_total)


def _ipod(quantity: int, unit_price: int = 19900) -> dict[str, Any]:
    return {
        "sku": "IPOD2008PINK",
        "name": "IPod Nano - 8GB",
        "quantity": quantity,
        "unit_price": unit_price,
        "category": "",
        "url": "",
        "image_url": "",
    }


def test_a_checkout_becomes_item_events_its_start_and_its_contact(shopify_shop):
    before = timezone.now()

    response = post_shopify(
        "checkouts/create", fixture_bytes("shopify", "checkouts_create.json"), webhook_id="d-1"
    )

    assert response.status_code == 200
    assert response.json() == {"outcome": "recorded", "events": 3}
    store = shopify_shop.store_id
    # The same SKU on two lines is one line of quantity 2.
    assert _events(store, CHECKOUT_CART) == [
        (
            "cart.item_added",
            {
                "sku": "IPOD2008PINK",
                "name": "IPod Nano - 8GB",
                "quantity": 2,
                "unit_price": 19900,
                "currency": "USD",
            },
        ),
        ("checkout.started", {}),
        ("checkout.contact_captured", {"email": "example@email.com", "consent": {"email": False}}),
    ]
    assert _state(store, CHECKOUT_CART) == (
        "checkout", "USD", [_ipod(2)], 39800, "example@email.com", {"email": False}, "", None
    )  # fmt: skip
    stored = CartEvent.objects.filter(store_id=store, cart=CHECKOUT_CART)
    assert {(e.source, e.source_ref, e.occurred_at) for e in stored} == {
        ("platform", "shopify:d-1", CHECKOUT_AT)
    }
    assert sorted(
        PlatformRef.objects.filter(store_id=store).values_list("ref", "cart", "platform")
    ) == [
        ("cart:eeafa272cebfd4b22385bc4b645e762c", CHECKOUT_CART, "shopify"),
        ("checkout:123123123", CHECKOUT_CART, "shopify"),
    ]
    platform_cart = PlatformCart.objects.get(store_id=store, cart=CHECKOUT_CART)
    assert platform_cart.restore_url == (
        "https://checkout.local/548380009/checkouts/123123123/recover?key=example-secret-token"
    )
    assert (platform_cart.updated_at, platform_cart.currency, platform_cart.deleted) == (
        CHECKOUT_AT,
        "USD",
        False,
    )
    assert platform_cart.lines == [
        {"sku": "IPOD2008PINK", "name": "IPod Nano - 8GB", "quantity": 2, "unit_price": 19900}
    ]
    delivery = InboundDelivery.objects.get(store_id=store)
    assert (delivery.delivery_id, delivery.topic, delivery.outcome, delivery.cart) == (
        "d-1",
        "checkouts/create",
        "recorded",
        CHECKOUT_CART,
    )
    assert delivery.events == 3
    last = Connection.objects.get(pk=shopify_shop.connection.pk).last_delivery_at
    assert last is not None and before <= last <= timezone.now()


def test_an_update_as_old_as_the_recorded_checkout_is_stale_and_moves_nothing(shopify_shop):
    post_shopify("checkouts/create", fixture_bytes("shopify", "checkouts_create.json"))
    store = shopify_shop.store_id
    state = _state(store, CHECKOUT_CART)

    # The sample update carries the create's updated_at.
    response = post_shopify("checkouts/update", fixture_bytes("shopify", "checkouts_update.json"))

    assert response.json() == {"outcome": "stale", "events": 0}
    assert _state(store, CHECKOUT_CART) == state
    assert CartEvent.objects.filter(store_id=store).count() == 3
    assert list(
        InboundDelivery.objects.filter(store_id=store).order_by("id").values_list("outcome")
    ) == [("recorded",), ("stale",)]


def _checkout_at(minutes: int, lines: list[tuple[str, int, str]], **extra: Any) -> dict:
    payload = fixture_json("shopify", "checkouts_update.json")
    template = payload["line_items"][0]
    payload["line_items"] = [
        {**copy.deepcopy(template), "sku": sku, "title": f"Item {sku}", "quantity": q, "price": p}
        for sku, q, p in lines
    ]
    payload["updated_at"] = (CHECKOUT_AT + timedelta(minutes=minutes)).isoformat()
    payload.update(extra)
    return payload


def test_a_later_update_becomes_the_differences(shopify_shop):
    store = shopify_shop.store_id
    post_shopify("checkouts/create", _checkout_at(0, [("A", 1, "10.00"), ("B", 2, "5.00")]))

    response = post_shopify(
        "checkouts/update",
        _checkout_at(
            5,
            [("B", 3, "5.00"), ("C", 1, "7.50"), ("A", 1, "9.00")],
            email="new@example.com",
            buyer_accepts_marketing=True,
            customer_locale="pt-BR",
        ),
    )

    assert response.json() == {"outcome": "recorded", "events": 5}
    events = _events(store, CHECKOUT_CART)[4:]  # after 2 items, start, contact
    assert events == [
        ("cart.item_quantity_changed", {"sku": "B", "quantity": 3}),
        (
            "cart.item_added",
            {"sku": "C", "name": "Item C", "quantity": 1, "unit_price": 750, "currency": "USD"},
        ),
        ("cart.item_removed", {"sku": "A"}),
        (
            "cart.item_added",
            {"sku": "A", "name": "Item A", "quantity": 1, "unit_price": 900, "currency": "USD"},
        ),
        (
            "checkout.contact_captured",
            {"email": "new@example.com", "consent": {"email": True}, "locale": "pt-BR"},
        ),
    ]
    state = CartState.objects.get(store_id=store, token=CHECKOUT_CART)
    assert sorted((i["sku"], i["quantity"], i["unit_price"]) for i in state.items) == [
        ("A", 1, 900),
        ("B", 3, 500),
        ("C", 1, 750),
    ]
    assert (state.email, state.consent, state.locale) == (
        "new@example.com",
        {"email": True},
        "pt-BR",
    )


def test_carts_become_items_and_an_unchanged_cart_update_is_stale(shopify_shop):
    store = shopify_shop.store_id

    created = post_shopify("carts/create", fixture_bytes("shopify", "carts_create.json"))
    updated = post_shopify("carts/update", fixture_bytes("shopify", "carts_update.json"))

    assert (created.json(), updated.json()) == (
        {"outcome": "recorded", "events": 1},
        {"outcome": "stale", "events": 0},
    )
    assert _events(store, "shopify-cart-exampleCartId") == [
        (
            "cart.item_added",
            {
                "sku": "example-shirt-s",
                "name": "Example T-Shirt - Small",
                "quantity": 3,
                "unit_price": 1999,
                "currency": "USD",
            },
        )
    ]
    state = CartState.objects.get(store_id=store, token="shopify-cart-exampleCartId")
    assert (state.status, state.value, state.checkout_started_at) == ("active", 5997, None)


def test_a_line_without_sku_is_named_by_its_variant_id_exactly(shopify_shop):
    payload = fixture_json("shopify", "carts_create.json")
    payload["line_items"][0]["sku"] = ""

    post_shopify("carts/create", payload)

    items = CartState.objects.get(store_id=shopify_shop.store_id).items
    assert [i["sku"] for i in items] == ["variant:704912205188288575"]


def test_an_order_converts_its_cart_keeping_its_id_exactly(shopify_shop):
    store = shopify_shop.store_id

    response = post_shopify("orders/create", fixture_bytes("shopify", "orders_create.json"))

    # A cart first seen through its order gets the order's lines: what was bought.
    assert response.json() == {"outcome": "recorded", "events": 7}
    assert _events(store, ORDER_CART) == [
        *[
            (
                "cart.item_added",
                {"sku": sku, "name": name, "quantity": 1, "unit_price": price, "currency": "USD"},
            )
            for sku, name, price in ORDER_LINES
        ],
        (
            "checkout.contact_captured",
            {"email": "jon@example.com", "consent": {"email": True}, "locale": "en"},
        ),
        ("order.placed", {"order_id": ORDER_ID, "total": 40495, "currency": "USD"}),
    ]
    assert _state(store, ORDER_CART) == (
        "converted", "USD", [_line(sku, name, price) for sku, name, price in ORDER_LINES], 41495,
        "jon@example.com", {"email": True}, ORDER_ID, 40495,
    )  # fmt: skip
    assert list(PlatformRef.objects.filter(store_id=store).values_list("ref", flat=True)) == [
        f"order:{ORDER_ID}"
    ]


def test_orders_paid_after_orders_create_places_the_order_once(shopify_shop):
    body = fixture_bytes("shopify", "orders_create.json")
    post_shopify("orders/create", body)

    paid = post_shopify("orders/paid", body)

    assert paid.json() == {"outcome": "recorded", "events": 0}
    assert [t for t, _ in _events(shopify_shop.store_id, ORDER_CART)].count("order.placed") == 1


# orders_create.json's line items: (sku, title, price in cents), one of each.
ORDER_LINES = [
    ("SKU2006-001", "Aviator sunglasses", 8999),
    ("LENS-PROTECT-2YR", "Lens Protection Plan (2 Year)", 1999),
    ("CASE-LEATHER-PREM", "Premium Leather Case", 2499),
    ("SKU2006-020", "Mid-century lounger", 15999),
    ("SKU2006-035", "Coffee table", 11999),
]


def _line(sku: str, name: str, price: int) -> dict[str, Any]:
    return {
        "sku": sku, "name": name, "quantity": 1, "unit_price": price, "category": "", "url": "",
        "image_url": "",
    }  # fmt: skip


def _order_for_checkout(order_id: int, **extra: Any) -> dict:
    payload = fixture_json("shopify", "orders_create.json")
    payload.update(
        id=order_id,
        cart_token="eeafa272cebfd4b22385bc4b645e762c",
        checkout_token="123123123",
        **extra,
    )
    return payload


def test_an_order_before_its_checkout_converts_the_cart_the_checkout_lands_on(shopify_shop):
    store = shopify_shop.store_id

    post_shopify("orders/create", _order_for_checkout(820982911946154508))
    checkout = post_shopify("checkouts/create", fixture_bytes("shopify", "checkouts_create.json"))

    # Not newer than the order (the same time): stale. The cart keeps what was bought and the
    # order's contact, as when the checkout comes first (test_a_second_order_...).
    assert checkout.json() == {"outcome": "stale", "events": 0}
    state = CartState.objects.get(store_id=store, token=CHECKOUT_CART)
    assert (state.status, state.order_id, state.value, state.email) == (
        "converted",
        ORDER_ID,
        41495,
        "jon@example.com",
    )
    assert CartState.objects.filter(store_id=store).count() == 1


def test_a_second_order_for_a_converted_cart_is_rejected_with_its_reason(shopify_shop):
    store = shopify_shop.store_id
    post_shopify("checkouts/create", fixture_bytes("shopify", "checkouts_create.json"))
    post_shopify("orders/create", _order_for_checkout(820982911946154508))
    events = CartEvent.objects.filter(store_id=store).count()

    other = post_shopify("orders/create", _order_for_checkout(999999999999999999))

    assert other.status_code == 200
    assert other.json() == {"outcome": "rejected", "events": 0}
    assert CartEvent.objects.filter(store_id=store).count() == events
    delivery = InboundDelivery.objects.filter(store_id=store).latest("id")
    assert delivery.reason == (
        f"Order 999999999999999999: its cart {CHECKOUT_CART} was converted by order "
        f"{ORDER_ID} already."
    )
    assert not PlatformRef.objects.filter(store_id=store, ref="order:999999999999999999").exists()


def test_a_deleted_checkout_is_marked_without_a_cart_event(shopify_shop):
    store = shopify_shop.store_id
    unknown = post_shopify("checkouts/delete", fixture_bytes("shopify", "checkouts_delete.json"))
    post_shopify("checkouts/create", fixture_bytes("shopify", "checkouts_create.json"))
    events = CartEvent.objects.filter(store_id=store).count()

    deleted = post_shopify("checkouts/delete", fixture_bytes("shopify", "checkouts_delete.json"))

    assert unknown.json() == {"outcome": "ignored", "events": 0}
    assert deleted.json() == {"outcome": "recorded", "events": 0}
    assert PlatformCart.objects.get(store_id=store, cart=CHECKOUT_CART).deleted is True
    assert CartEvent.objects.filter(store_id=store).count() == events


def _refund(refund_id: int, order_id: int, *amounts: tuple[str, str, str]) -> dict:
    return {
        "id": refund_id,
        "order_id": order_id,
        "created_at": "2022-01-02T10:00:00-05:00",
        "transactions": [
            {"id": 1, "kind": kind, "status": status, "amount": amount, "currency": "USD"}
            for kind, status, amount in amounts
        ],
    }


def test_a_refund_is_recorded_once_whatever_delivers_it(shopify_shop):
    store = shopify_shop.store_id
    post_shopify("orders/create", fixture_bytes("shopify", "orders_create.json"))
    refund = _refund(
        929361462,
        820982911946154508,
        ("refund", "success", "41.30"),
        ("refund", "failure", "10.00"),
        ("sale", "success", "5.00"),
    )

    first = post_shopify("refunds/create", refund)
    again = post_shopify("refunds/create", refund)  # another delivery id, the same refund

    assert first.json() == {"outcome": "recorded", "events": 1}
    assert again.json() == {"outcome": "ignored", "events": 0}
    assert _events(store, ORDER_CART)[-1] == (
        "order.refunded",
        {"order_id": ORDER_ID, "amount": 4130, "currency": "USD"},
    )
    assert CartState.objects.get(store_id=store, token=ORDER_CART).refunded == 4130


def test_a_refund_of_an_unknown_order_is_ignored(shopify_shop):
    response = post_shopify("refunds/create", _refund(1, 42, ("refund", "success", "1.00")))

    assert response.json() == {"outcome": "ignored", "events": 0}
    assert InboundDelivery.objects.get().reason == "Refund of order 42: unknown order."
    assert CartEvent.objects.count() == 0


def test_an_unmapped_topic_is_recorded_as_ignored(shopify_shop):
    response = post_shopify("products/update", {"id": 1})

    assert response.json() == {"outcome": "ignored", "events": 0}
    assert InboundDelivery.objects.get().reason == "Topic products/update is not mapped."


def _our_coupon(store_id: int) -> Coupon:
    now = timezone.now() - timedelta(minutes=1)
    campaign = campaign_with_tiers(
        store_id,
        activated_at=now,
        tiers=[{"channel": "email", "offer_kind": "percent_discount", "percent": 10}],
    )
    issued = coupons.coupon_issue(
        store_id=store_id,
        cart="our-cart",
        shopper="",
        step_id=None,
        tier=campaign.tiers.get(),
        cart_value=40000,
        currency="USD",
        score=0.9,
        price_sensitivity=None,
        gross_margin_percent=40,
        now=now,
        channel=Tier.Channel.DISCOUNT,
    )
    assert issued.coupon is not None
    return issued.coupon


def test_our_code_on_an_order_is_redeemed_once_across_create_and_paid(shopify_shop):
    store = shopify_shop.store_id
    coupon = _our_coupon(store)
    codes = [
        {"code": coupon.code, "amount": "40.00", "type": "percentage"},
        {"code": "SHOP-OWN-CODE", "amount": "5.00", "type": "fixed_amount"},
    ]
    body = json.dumps(_order_for_checkout(820982911946154508, discount_codes=codes)).encode()

    created = post_shopify("orders/create", body)
    paid = post_shopify("orders/paid", body)

    assert (created.json(), paid.json()) == (
        {"outcome": "recorded", "events": 7},  # its 5 lines, its contact, the order
        {"outcome": "recorded", "events": 0},
    )
    coupon.refresh_from_db()
    assert coupon.order_id == ORDER_ID and coupon.redeemed_at is not None
    assert CartEvent.objects.filter(store_id=store, type="campaign.coupon_redeemed").count() == 1
    assert _events(store, CHECKOUT_CART)[-1] == (
        "order.placed",
        {"order_id": ORDER_ID, "total": 40495, "currency": "USD", "coupon": coupon.code},
    )
    assert InboundDelivery.objects.filter(store_id=store).latest("id").reason == ""


# Every sample: a wrong signature, a replayed delivery id, a truncated body ------------------------


@pytest.mark.parametrize(("topic", "name"), SAMPLES)
def test_a_wrong_or_missing_signature_is_401_and_stores_nothing(shopify_shop, topic, name):
    body = fixture_bytes("shopify", name)

    wrong = post_shopify(topic, body, secret="not-the-secret")
    missing = post_shopify(topic, body, signature="")

    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert wrong.json() == {
        "detail": "The X-Shopify-Hmac-Sha256 signature does not match the body.",
        "code": "bad_signature",
    }
    assert missing.json() == {
        "detail": "The X-Shopify-Hmac-Sha256 header is missing.",
        "code": "bad_signature",
    }
    assert _stored(shopify_shop.store_id) == (0, 0, 0, 0)
    assert Connection.objects.get(pk=shopify_shop.connection.pk).last_delivery_at is None


@pytest.mark.parametrize(("topic", "name"), READABLE)
def test_a_replayed_delivery_id_stores_nothing_new(shopify_shop, topic, name):
    body = fixture_bytes("shopify", name)
    first = post_shopify(topic, body, webhook_id="same-id")
    stored = _stored(shopify_shop.store_id)

    replay = post_shopify(topic, body, webhook_id="same-id")

    assert first.status_code == 200
    assert replay.status_code == 200
    assert replay.json() == {"outcome": "duplicate", "events": 0}
    assert _stored(shopify_shop.store_id) == stored


@pytest.mark.parametrize(("topic", "name"), SAMPLES)
def test_a_truncated_body_is_400_and_stores_nothing(shopify_shop, topic, name):
    body = fixture_bytes("shopify", name)

    response = post_shopify(topic, body[: len(body) // 2])

    assert response.status_code == 400
    assert response.json()["code"] == "bad_delivery"
    assert response.json()["detail"] == "The body is not valid JSON."
    assert _stored(shopify_shop.store_id) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("name", "topic", "first", "then"),
    [
        ("2024-01_checkouts_1.json", "checkouts/create", "currency", "updated_at"),
        ("2024-04_checkouts_2.json", "checkouts/update", "currency", "line_items.0.price"),
        ("2024-04_orders_1.json", "orders/create", "total_price_set", "total_price"),
    ],
)
def test_the_anonymized_exemplars_placeholders_are_400_by_field(
    shopify_shop, name, topic, first, then
):
    """Their money and times are placeholders ("example string"): refused by field, never 500;
    with the currency repaired, the next placeholder is named."""
    name = f"anonymized_exemplars/{name}"
    payload = fixture_json("shopify", name)

    as_sent = post_shopify(topic, fixture_bytes("shopify", name))
    payload["currency"] = payload["presentment_currency"] = "USD"
    payload.pop("total_price_set", None)
    repaired = post_shopify(topic, payload)

    assert as_sent.status_code == 400
    assert as_sent.json() == {
        "detail": f"{first}: 'example string' is not an ISO 4217 currency code.",
        "code": "bad_delivery",
        first: ["'example string' is not an ISO 4217 currency code."],
    }
    assert repaired.status_code == 400
    assert list(repaired.json()) == ["detail", "code", then]
    assert _stored(shopify_shop.store_id) == (0, 0, 0, 0)


def test_a_shop_we_do_not_know_is_404(shopify_shop):
    response = post_shopify(
        "checkouts/create", fixture_bytes("shopify", "checkouts_create.json"), domain="x.shop"
    )

    assert response.status_code == 404
    assert response.json() == {
        "detail": "No active connection for this shop or store.",
        "code": "unknown_shop",
    }


def test_a_delivery_without_its_id_or_topic_is_400(shopify_shop):
    body = fixture_bytes("shopify", "checkouts_create.json")

    no_id = post_shopify("checkouts/create", body, webhook_id=" ")
    no_topic = post_shopify("", body)

    assert no_id.status_code == 400
    assert no_id.json()["X-Shopify-Webhook-Id"] == ["This header is required."]
    assert no_topic.status_code == 400
    assert no_topic.json()["X-Shopify-Topic"] == ["This header is required."]


def test_quantities_beyond_carts_bounds_are_400_and_store_nothing(shopify_shop):
    payload = _checkout_at(0, [("A", 100_001, "1.00")])

    response = post_shopify("checkouts/create", payload)

    assert response.status_code == 400
    assert response.json()["line_items.0.quantity"] == ["Expected 0 to 100000."]
    assert _stored(shopify_shop.store_id) == (0, 0, 0, 0)


def test_merged_lines_beyond_carts_bounds_are_400(shopify_shop):
    payload = _checkout_at(0, [("A", 60_000, "1.00"), ("A", 60_000, "1.00")])

    response = post_shopify("checkouts/create", payload)

    assert response.status_code == 400
    assert response.json()["line_items"] == ["A line's quantity is 1 to 100000."]
    assert _stored(shopify_shop.store_id) == (0, 0, 0, 0)


def test_deep_json_is_400_not_500(shopify_shop):
    response = post_shopify("checkouts/create", b"[" * 5000 + b"]" * 5000)

    assert response.status_code == 400
    assert _stored(shopify_shop.store_id) == (0, 0, 0, 0)


# Out of order ------------------------------------------------------------------------------------


def _story() -> list[tuple[str, bytes]]:
    return [
        ("checkouts/create", json.dumps(_checkout_at(0, [("A", 1, "10.00")])).encode()),
        (
            "checkouts/update",
            json.dumps(_checkout_at(3, [("A", 2, "10.00"), ("B", 1, "4.00")])).encode(),
        ),
        (
            "checkouts/update",
            json.dumps(
                _checkout_at(6, [("B", 2, "4.00"), ("C", 1, "3.00")], email="late@example.com")
            ).encode(),
        ),
        ("orders/create", json.dumps(_order_for_checkout(820982911946154508)).encode()),
    ]


def test_every_delivery_order_of_one_checkout_gives_the_same_cart(db):
    story = _story()
    finals = set()
    for n, order in enumerate(itertools.permutations(range(len(story)))):
        from carts import services as carts_services

        creds = carts_services.store_create(name=f"Shop {n}")
        services.connection_create(
            store_id=creds.store_id,
            platform="shopify",
            shop_domain=f"shop-{n}.myshopify.com",
            webhook_secret="shpss_test_client_secret",
        )
        for i in order:
            topic, body = story[i]
            response = post_shopify(topic, body, domain=f"shop-{n}.myshopify.com")
            assert response.status_code == 200, (order, response.json())
        state = CartState.objects.get(store_id=creds.store_id)
        finals.add(
            (
                state.token,
                state.status,
                tuple(sorted((i["sku"], i["quantity"], i["unit_price"]) for i in state.items)),
                state.email,
                state.order_id,
            )
        )
    assert finals == {
        (
            CHECKOUT_CART,
            "converted",
            (("B", 2, 400), ("C", 1, 300)),
            "jon@example.com",  # the order's contact is the last word
            ORDER_ID,
        )
    }


def test_the_shop_domain_is_matched_case_insensitively(shopify_shop):
    response = post_shopify(
        "checkouts/create",
        fixture_bytes("shopify", "checkouts_create.json"),
        domain=SHOP_DOMAIN.upper(),
    )

    assert response.status_code == 200
