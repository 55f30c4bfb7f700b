"""The demo checkout's server side charges the price the page showed, or refuses (409)."""

from __future__ import annotations

import uuid

from django.test import Client
from django.utils import timezone

from carts import event_types
from carts.models import CartEvent, Store
from carts.services import DEMO_STORE_NAME, NewEvent, events_append, store_create, store_origins_add
from carts.sources import Source
from recovery import cart_tokens

ORIGIN = "http://shop.test"


def _order(body: dict):
    return Client().post(
        "/demo/order", body, content_type="application/json", headers={"Origin": ORIGIN}
    )


def test_an_order_is_placed_at_the_quoted_price_only(db) -> None:
    creds = store_create(name=DEMO_STORE_NAME)
    store = Store.objects.get(pk=creds.store_id)
    store_origins_add(store=store, origins=[ORIGIN])
    cart = cart_tokens.cart_token_mint(store_id=store.pk)
    item = {"sku": "MUG-01", "name": "Mug", "quantity": 2, "unit_price": 1299, "currency": "EUR"}
    version, data = event_types.validate("cart.item_added", None, item)
    events_append(
        store_id=store.pk,
        events=[NewEvent(uuid.uuid4(), cart, "cart.item_added", version, timezone.now(), data)],
        source=Source.browser("s"),
    )
    base = {"publishable_key": creds.publishable_key, "cart": cart, "shipping": 495}

    quote = _order({**base, "preview": True})
    assert quote.status_code == 200
    assert quote.json() == {
        "subtotal": 2598,
        "total": 2598 + 495,
        "discount": 0,
        "code": None,
        "shipping": 495,
        "currency": "EUR",
        "preview": True,
    }

    stale = _order({**base, "expected_total": 2598})  # shown before shipping was chosen, say
    assert stale.status_code == 409
    assert stale.json() == {
        "code": "price_changed",
        "detail": "The price is now €30.93, not €25.98: check it and place the order again.",
    }
    assert not CartEvent.objects.filter(store=store, cart=cart, type="order.placed").exists()

    for bad in ("3093", True, 30.93):
        refused = _order({**base, "expected_total": bad})
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_order")

    placed = _order({**base, "expected_total": 3093})
    assert placed.status_code == 201
    assert (placed.json()["total"], placed.json()["subtotal"]) == (3093, 2598)
    [order] = CartEvent.objects.filter(store=store, cart=cart, type="order.placed")
    assert order.data["total"] == 3093


def test_a_refused_price_is_written_in_the_stores_locale(db) -> None:
    # the one money format (carts.money.display): CLDR's de-DE for a store in Germany
    creds = store_create(name=DEMO_STORE_NAME)
    store = Store.objects.get(pk=creds.store_id)
    store.locale = "de-DE"
    store.save(update_fields=["locale"])
    store_origins_add(store=store, origins=[ORIGIN])
    cart = cart_tokens.cart_token_mint(store_id=store.pk)
    item = {"sku": "MUG-01", "name": "Mug", "quantity": 100, "unit_price": 1299, "currency": "EUR"}
    version, data = event_types.validate("cart.item_added", None, item)
    events_append(
        store_id=store.pk,
        events=[NewEvent(uuid.uuid4(), cart, "cart.item_added", version, timezone.now(), data)],
        source=Source.browser("s"),
    )

    stale = _order(
        {"publishable_key": creds.publishable_key, "cart": cart, "shipping": 495,
         "expected_total": 129900}
    )  # fmt: skip

    assert stale.status_code == 409
    assert stale.json()["detail"] == (
        "The price is now 1.303,95\xa0€, not 1.299,00\xa0€: check it and place the order again."
    )
