"""What a review of the inbound pipeline found (through WooCommerce's endpoint): an order is
never lost to lines its cart cannot take; one SKU listed twice is one line; an order placed before
its code expired redeems it, however late its delivery."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

from django.utils import timezone

from campaigns.models import Coupon
from carts import projections
from carts.models import CartEvent, CartState
from integrations.models import InboundDelivery
from tests.integrations import test_saleor as saleor
from tests.integrations.conftest import post_shopify
from tests.integrations.test_saleor import jwks, jwks_server, shop  # noqa: F401
from tests.integrations.test_shopify import _our_coupon
from tests.integrations.test_woocommerce import connection, fixture, post  # noqa: F401

CART = "woocommerce-order-727"


def _order(**changes: Any) -> dict[str, Any]:
    order = copy.deepcopy(fixture("order_created.json"))
    order.update(changes)
    return order


def test_an_order_whose_lines_the_cart_cannot_hold_is_placed_without_them(connection):  # noqa: F811
    store_id = connection.store_id
    order = _order()
    # Each line within bounds, together past the most a cart may be worth.
    order["line_items"][0].update(quantity=100_000, price=str(projections.MAX_CART_VALUE // 100))

    response = post(store_id, order, "order.created")

    assert response.json()["outcome"] == "recorded"
    state = CartState.objects.get(store_id=store_id, token=CART)
    assert (state.status, state.order_id, state.order_total, state.items) == (
        "converted",
        "727",
        2935,
        [],
    )
    reason = InboundDelivery.objects.get(store_id=store_id).reason
    assert reason.startswith("The order's lines were left out: ")


def test_one_sku_listed_twice_is_one_line_at_the_average_price(connection):  # noqa: F811
    store_id = connection.store_id
    order = _order(status="pending")
    second = copy.deepcopy(order["line_items"][1])  # Bar3, 1 at 12.00
    second.update(id=999, quantity=2, price=5, subtotal="10.00", total="10.00")
    order["line_items"].append(second)

    post(store_id, order, "order.created")

    state = CartState.objects.get(store_id=store_id, token=CART)
    assert [(i["sku"], i["quantity"], i["unit_price"]) for i in state.items] == [
        ("product:93", 2, 300),
        ("Bar3", 3, 733),  # (1 x 1200 + 2 x 500) / 3, rounded
    ]
    assert state.value == 600 + 3 * 733


def test_an_order_placed_before_its_code_expired_redeems_it_when_delivered_after(connection):  # noqa: F811
    store_id = connection.store_id
    coupon = _our_coupon(store_id)
    Coupon.objects.filter(pk=coupon.pk).update(expires_at=timezone.now() - timedelta(minutes=5))
    coupon.refresh_from_db()
    placed = coupon.expires_at - timedelta(hours=1)
    order = _order(
        coupon_lines=[{"id": 1, "code": coupon.code}],
        date_paid_gmt=placed.strftime("%Y-%m-%dT%H:%M:%S"),
        date_created_gmt=placed.strftime("%Y-%m-%dT%H:%M:%S"),
    )

    response = post(store_id, order, "order.created")

    coupon.refresh_from_db()
    assert response.json()["outcome"] == "recorded"
    assert coupon.order_id == "727"
    assert coupon.redeemed_at is not None and coupon.redeemed_at <= coupon.expires_at
    assert CartEvent.objects.filter(store_id=store_id, type="campaign.coupon_redeemed").count() == 1
    assert InboundDelivery.objects.get(store_id=store_id).reason == ""


def test_a_shopify_secret_that_no_longer_opens_is_a_401_not_a_500(shopify_shop, settings):
    """Sealed under a SECRET_KEY that is gone (rotated without a fallback)."""
    settings.SECRET_KEY = "another-key-" + "x" * 40
    settings.SECRET_KEY_FALLBACKS = []

    response = post_shopify("checkouts/create", {"token": "t"})

    assert response.status_code == 401
    assert response.json()["detail"] == "This shop's webhook secret cannot be read; set it again."
    assert not InboundDelivery.objects.filter(store_id=shopify_shop.store_id).exists()


def test_a_signed_saleor_body_posted_under_another_event_name_is_refused(shop):  # noqa: F811
    """Saleor signs the body, not its Saleor-Event header: the body's __typename decides."""
    body = json.dumps({"__typename": "CheckoutUpdated", **saleor.checkout_event()}).encode()

    swapped = saleor.post(shop.store_id, "order_fully_paid", body)
    right = saleor.post(shop.store_id, "checkout_updated", body)

    assert swapped.status_code == 400
    assert swapped.json()["Saleor-Event"] == ["Does not match the payload's __typename."]
    assert right.json()["outcome"] == "recorded"
