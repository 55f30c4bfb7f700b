"""Every WooCommerce and Saleor sample payload (tests/fixtures/platforms/, the platforms' own
samples, kept in the repository) through its endpoint: with a correct signature the expected
events and cart state; with a wrong signature, a replayed delivery, a truncated body, and in a
shuffled order.
(Shopify's samples: tests/integrations/test_shopify.py.)"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from carts.models import CartEvent, CartState
from integrations.models import InboundDelivery
from tests.integrations import test_saleor as saleor
from tests.integrations import test_woocommerce as woo
from tests.integrations.test_saleor import jwks, jwks_server, shop  # noqa: F401 (fixtures)
from tests.integrations.test_woocommerce import connection  # noqa: F401 (fixture)

WOO_CART = "woocommerce-order-727"
SALEOR_CART = "saleor-checkout-uuid"  # the legacy sample's id is "Checkout:uuid"


def _log(store_id: int) -> list[tuple[str, str, str]]:
    return list(
        CartEvent.objects.filter(store_id=store_id)
        .order_by("position")
        .values_list("cart", "type", "source")
    )


def _carts(store_id: int) -> list[tuple[Any, ...]]:
    return [
        (c.token, c.status, [(i["sku"], i["quantity"], i["unit_price"]) for i in c.items],
         c.email, c.order_id, c.order_total, c.currency)
        for c in CartState.objects.filter(store_id=store_id).order_by("token")
    ]  # fmt: skip


def _stored(store_id: int) -> tuple[int, int]:
    return (
        CartEvent.objects.filter(store_id=store_id).count(),
        InboundDelivery.objects.filter(store_id=store_id).count(),
    )


# WooCommerce: both samples are order 727 (processing, then completed) ---------------------------

WOO_SAMPLES = {
    "order_created.json": ("order.created", 4),  # its two lines, the billing contact, the order
    "order_updated.json": ("order.updated", 4),
}
WOO_CONVERTED = [
    (WOO_CART, "converted", [("product:93", 2, 300), ("Bar3", 1, 1200)], "john.doe@example.com",
     "727", 2935, "USD"),
]  # fmt: skip


def _woo(store_id: int, name: str, **kw: Any):
    topic, _ = WOO_SAMPLES[name]
    return woo.post(store_id, (woo.FIXTURES / name).read_bytes(), topic, **kw)


@pytest.mark.parametrize("name", list(WOO_SAMPLES))
def test_each_woocommerce_sample_signed_gives_its_events_and_cart(connection, name):  # noqa: F811
    store_id = connection.store_id

    response = _woo(store_id, name)

    assert response.status_code == 200
    assert response.json() == {"outcome": "recorded", "events": WOO_SAMPLES[name][1]}
    assert _log(store_id) == [
        (WOO_CART, "cart.item_added", "platform"),
        (WOO_CART, "cart.item_added", "platform"),
        (WOO_CART, "checkout.contact_captured", "platform"),
        (WOO_CART, "order.placed", "platform"),
    ]
    assert _carts(store_id) == WOO_CONVERTED


@pytest.mark.parametrize("name", list(WOO_SAMPLES))
def test_each_woocommerce_sample_wrongly_signed_replayed_or_truncated(connection, name):  # noqa: F811
    store_id = connection.store_id
    body = (woo.FIXTURES / name).read_bytes()

    wrong = _woo(store_id, name, signature=woo.sign(body, "another-secret"))
    assert (wrong.status_code, _stored(store_id)) == (401, (0, 0))
    truncated = woo.post(store_id, body[: len(body) // 2], WOO_SAMPLES[name][0])
    assert (truncated.status_code, _stored(store_id)) == (400, (0, 0))

    first = _woo(store_id, name, delivery="delivery-1")
    stored = _stored(store_id)
    again = _woo(store_id, name, delivery="delivery-1")

    assert first.json()["outcome"] == "recorded"
    assert again.status_code == 200
    assert again.json() == {"outcome": "duplicate", "events": 0}
    assert _stored(store_id) == stored


@pytest.mark.parametrize("names", list(itertools.permutations(WOO_SAMPLES)))
def test_the_woocommerce_samples_in_any_order_end_in_one_converted_cart(connection, names):  # noqa: F811
    store_id = connection.store_id

    outcomes = [_woo(store_id, name).json() for name in names]

    assert outcomes == [{"outcome": "recorded", "events": 4}, {"outcome": "recorded", "events": 0}]
    assert _carts(store_id) == WOO_CONVERTED


# Saleor: a legacy checkout, a notify payload, the minimal order-created subscription -----------

SALEOR_SAMPLES = {
    # (event header, outcome, events)
    "legacy_checkout_payload_shipping_list_methods.json": ("checkout_updated", "recorded", 2),
    "notify_order_confirmation.json": ("notify_user", "ignored", 0),  # not an event we map
    # No total in the sample's subscription query: nothing invented (the reason is kept).
    "order_created_subscription_payload.json": ("order_created", "ignored", 0),
}
SALEOR_CHECKOUT: list[tuple[Any, ...]] = [
    (SALEOR_CART, "checkout", [], "linda.thomas@example.com", "", None, ""),
]


def _saleor(store_id: int, name: str, **kw: Any):
    event = SALEOR_SAMPLES[name][0]
    return saleor.post(store_id, event, (saleor.FIXTURES / name).read_bytes(), **kw)


@pytest.mark.parametrize("name", list(SALEOR_SAMPLES))
def test_each_saleor_sample_signed_gives_its_events_and_cart(shop, name):  # noqa: F811
    store_id = shop.store_id

    response = _saleor(store_id, name)

    _, outcome, events = SALEOR_SAMPLES[name]
    assert response.status_code == 200
    assert response.json() == {"outcome": outcome, "events": events}
    if events:
        assert _log(store_id) == [
            (SALEOR_CART, "checkout.started", "platform"),
            (SALEOR_CART, "checkout.contact_captured", "platform"),
        ]
        assert _carts(store_id) == SALEOR_CHECKOUT
    else:
        assert (_log(store_id), _carts(store_id)) == ([], [])
        delivery = InboundDelivery.objects.get(store_id=store_id)
        assert (delivery.outcome, delivery.reason != "") == ("ignored", True)


@pytest.mark.parametrize("name", list(SALEOR_SAMPLES))
def test_each_saleor_sample_wrongly_signed_replayed_or_truncated(shop, name):  # noqa: F811
    store_id = shop.store_id
    body = (saleor.FIXTURES / name).read_bytes()
    event = SALEOR_SAMPLES[name][0]

    wrong = saleor.post(store_id, event, body, signature=saleor.sign(body, saleor.OTHER_KEY))
    assert (wrong.status_code, _stored(store_id)) == (401, (0, 0))
    cut = body[: len(body) // 2]
    truncated = saleor.post(store_id, event, cut, signature=saleor.sign(cut))
    if event == "notify_user":  # an event we do not map is acknowledged unread
        assert (truncated.json(), _stored(store_id)) == (
            {"outcome": "ignored", "events": 0},
            (0, 1),
        )
    else:
        assert (truncated.status_code, _stored(store_id)) == (400, (0, 0))

    first = _saleor(store_id, name)
    stored = _stored(store_id)
    again = _saleor(store_id, name)  # Saleor's redelivery: the same event and body

    assert first.status_code == 200
    assert again.json() == {"outcome": "duplicate", "events": 0}
    assert _stored(store_id) == stored


@pytest.mark.parametrize("names", list(itertools.permutations(SALEOR_SAMPLES)))
def test_the_saleor_samples_in_any_order_end_the_same(shop, names):  # noqa: F811
    store_id = shop.store_id

    for name in names:
        assert _saleor(store_id, name).status_code == 200

    assert _carts(store_id) == SALEOR_CHECKOUT
    assert sorted(
        InboundDelivery.objects.filter(store_id=store_id).values_list("topic", "outcome")
    ) == [
        ("checkout_updated", "recorded"),
        ("notify_user", "ignored"),
        ("order_created", "ignored"),
    ]


def test_every_sample_of_the_two_platforms_is_exercised_here():
    """Each WooCommerce and Saleor sample file is in the tables above (a new one must be added)."""
    assert sorted(p.name for p in woo.FIXTURES.glob("*.json")) == sorted(WOO_SAMPLES)
    assert sorted(p.name for p in saleor.FIXTURES.glob("*.json")) == sorted(SALEOR_SAMPLES)
    for path in [*woo.FIXTURES.glob("*.json"), *saleor.FIXTURES.glob("*.json")]:
        assert json.loads(path.read_text()), path
