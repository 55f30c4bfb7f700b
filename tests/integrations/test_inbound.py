"""The inbound pipeline (integrations.inbound.delivery_receive) with an adapter that returns given
facts: what every platform's deliveries go through, whatever the platform."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection as db_connection
from rest_framework.test import APIClient

from carts import projections
from carts.models import CartEvent, CartState
from carts.validation import CART_TOKEN_PATTERN
from integrations import inbound, services
from integrations.facts import (
    BadDelivery,
    CheckoutSnapshot,
    Contact,
    Delivery,
    Fact,
    Line,
    OrderPlaced,
    OrderRefunded,
)
from integrations.models import InboundDelivery, PlatformCart, PlatformRef
from tests.integrations.conftest import Shop, fixture_bytes

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@dataclass
class FakeAdapter:
    """An adapter whose deliveries are the given facts (verify refuses when ``refuse`` says)."""

    facts: tuple[Fact, ...] = ()
    refuse: int | None = None
    platform: str = "shopify"
    reads: list[bytes] = field(default_factory=list)

    def verify(self, *, connection, headers, body) -> None:
        if self.refuse:
            raise BadDelivery(self.refuse, "refused")

    def read(self, *, headers, body, connection=None) -> Delivery:
        self.reads.append(body)
        return Delivery(headers["id"], "topic/x", self.facts)


def _receive(shop, delivery_id: str, *facts: Fact, now: datetime = NOW, **kw) -> inbound.Receipt:
    return inbound.delivery_receive(
        adapter=FakeAdapter(facts, **kw),
        connection=shop.connection,
        headers={"id": delivery_id},
        body=delivery_id.encode(),
        now=now,
    )


def _snapshot(minutes: int | None, *lines: Line, currency: str = "USD", **kw) -> CheckoutSnapshot:
    at = None if minutes is None else NOW - timedelta(hours=1) + timedelta(minutes=minutes)
    return CheckoutSnapshot(
        refs=("cart:c1", "checkout:k1"),
        updated_at=at,
        currency=currency,
        lines=lines,
        checkout=True,
        **kw,
    )


def test_a_refused_signature_stores_nothing_and_reads_nothing(shopify_shop):
    adapter = FakeAdapter((_snapshot(0, Line("A", "A", 1, 100)),), refuse=401)

    with pytest.raises(BadDelivery) as refused:
        inbound.delivery_receive(
            adapter=adapter,
            connection=shopify_shop.connection,
            headers={"id": "1"},
            body=b"",
            now=NOW,
        )

    assert refused.value.status == 401
    assert adapter.reads == []
    assert InboundDelivery.objects.count() == CartEvent.objects.count() == 0


def test_event_ids_are_the_delivery_and_place_so_a_half_done_retry_stores_nothing_new(
    shopify_shop,
):
    order = OrderPlaced(("order:9",), "9", 500, "USD", NOW)
    first = _receive(shopify_shop, "d-1", order)
    # As if the delivery's record had been lost after its events were stored.
    InboundDelivery.objects.all().delete()

    again = _receive(shopify_shop, "d-1", order)

    assert (first.outcome, first.events, again.outcome, again.events) == (
        "recorded",
        1,
        "recorded",
        0,
    )
    event = CartEvent.objects.get()
    assert event.event_id == uuid.uuid5(inbound.EVENT_IDS, "shopify:d-1:0")
    assert (event.source, event.source_ref) == ("platform", "shopify:d-1")


def test_occurred_at_is_the_platforms_time_within_the_servers_window(shopify_shop):
    future = CheckoutSnapshot(("cart:f",), NOW + timedelta(days=3), "USD", (Line("A", "A", 1, 1),))
    ancient = CheckoutSnapshot(
        ("cart:a",), datetime(1, 1, 1, tzinfo=UTC), "USD", (Line("A", "A", 1, 1),)
    )
    recent = CheckoutSnapshot(
        ("cart:r",), NOW - timedelta(minutes=7), "USD", (Line("A", "A", 1, 1),)
    )

    _receive(shopify_shop, "1", future, ancient, recent)

    occurred = dict(CartEvent.objects.values_list("cart", "occurred_at"))
    assert occurred == {
        "shopify-cart-f": NOW,
        "shopify-cart-a": NOW - timedelta(days=settings.CARTS_SERVER_PAST_DAYS),
        "shopify-cart-r": NOW - timedelta(minutes=7),
    }
    # The platform's own time is what the snapshot is compared by.
    assert PlatformCart.objects.get(cart="shopify-cart-f").updated_at == NOW + timedelta(days=3)


@pytest.mark.parametrize(
    ("ref", "token"),
    [
        ("cart:abc", "shopify-cart-abc"),
        ("order:704912205188288575", "shopify-order-704912205188288575"),
        ("cart:a b/c", None),
        ("checkout:" + "x" * 200, None),
    ],
)
def test_cart_tokens_are_readable_or_hashed_and_always_valid(ref, token):
    made = inbound.cart_token("shopify", ref)

    assert re.match(CART_TOKEN_PATTERN, made)
    if token is not None:
        assert made == token
    else:
        kind = ref.split(":")[0]
        assert made.startswith(f"shopify-{kind}-h") and len(made) == len(f"shopify-{kind}-h") + 40
        assert inbound.cart_token("shopify", ref) == made


def test_a_snapshot_without_a_time_applies_and_one_older_than_recorded_is_stale(shopify_shop):
    _receive(shopify_shop, "1", _snapshot(10, Line("A", "A", 2, 100)))

    older = _receive(shopify_shop, "2", _snapshot(5, Line("A", "A", 9, 100)))
    timeless = _receive(shopify_shop, "3", _snapshot(None, Line("A", "A", 3, 100)))

    assert (older.outcome, older.events) == ("stale", 0)
    assert (timeless.outcome, timeless.events) == ("recorded", 1)
    state = CartState.objects.get(token="shopify-cart-c1")
    assert [(i["sku"], i["quantity"]) for i in state.items] == [("A", 3)]
    assert PlatformCart.objects.get().updated_at == NOW - timedelta(minutes=50)


def test_a_snapshot_the_cart_refuses_is_rejected_with_its_reason_and_keeps_nothing(shopify_shop):
    _receive(shopify_shop, "1", _snapshot(0, Line("A", "A", 1, 100)))

    euros = _receive(shopify_shop, "2", _snapshot(5, Line("B", "B", 1, 100), currency="EUR"))

    assert (euros.outcome, euros.events) == ("rejected", 0)
    assert euros.reason == "Cart is in USD; this event is in EUR."
    assert InboundDelivery.objects.get(delivery_id="2").reason == euros.reason
    assert [line["sku"] for line in PlatformCart.objects.get().lines] == ["A"]
    assert CartEvent.objects.count() == 2  # item and start, of the first


def test_a_refund_beyond_the_order_is_rejected(shopify_shop):
    _receive(shopify_shop, "1", OrderPlaced(("order:9",), "9", 500, "USD", NOW))

    too_much = _receive(shopify_shop, "2", OrderRefunded(("order:9",), "9", 501, "USD", "r1", NOW))

    assert (too_much.outcome, too_much.reason) == (
        "rejected",
        "Refunds would exceed the order total of 500.",
    )
    # Not bound: the same refund, if it comes again corrected, is not taken for a duplicate.
    assert not PlatformRef.objects.filter(ref="refund:r1").exists()


@pytest.mark.parametrize(
    ("fact", "field"),
    [
        (_snapshot(0, *(Line(f"S{i}", "x", 1, 1) for i in range(501))), "line_items"),
        (_snapshot(0, Line("A", "A", 0, 1)), "line_items"),
        (_snapshot(0, Line("A", "A", 1, projections.MAX_CART_VALUE + 1)), "line_items"),
        (_snapshot(0, Line("A", "A", 100_000, 10**8)), "line_items"),
        (OrderPlaced(("order:1",), "1", projections.MAX_CART_VALUE + 1, "USD", NOW), "total"),
        (OrderRefunded(("order:1",), "1", 0, "USD"), "amount"),
    ],
)
def test_facts_beyond_carts_bounds_are_400_before_anything_is_stored(shopify_shop, fact, field):
    with pytest.raises(BadDelivery) as refused:
        _receive(shopify_shop, "1", fact)

    assert refused.value.status == 400
    assert list(refused.value.fields) == [field]
    assert InboundDelivery.objects.count() == CartEvent.objects.count() == 0
    assert PlatformRef.objects.count() == 0


def test_a_payload_our_schema_refuses_is_400_and_stores_nothing(shopify_shop):
    with pytest.raises(BadDelivery) as refused:
        _receive(shopify_shop, "1", _snapshot(0, Line("A\x00", "A", 1, 1)))

    assert refused.value.status == 400
    assert list(refused.value.fields) == ["cart.item_added"]
    assert InboundDelivery.objects.count() == PlatformRef.objects.count() == 0


def test_a_contact_the_cart_cannot_take_is_left_out_not_refused(shopify_shop):
    contact = Contact("not an address", phone="555-555-BILL", accepts_marketing=True, locale="??")

    receipt = _receive(shopify_shop, "1", _snapshot(0, Line("A", "A", 1, 1), contact=contact))

    assert (receipt.outcome, receipt.events) == ("recorded", 2)
    assert sorted(CartEvent.objects.values_list("type", flat=True)) == [
        "cart.item_added",
        "checkout.started",
    ]


def test_a_phone_and_locale_that_fit_are_kept(shopify_shop):
    contact = Contact("a@example.com", phone="+1 555 0100", accepts_marketing=None, locale="en-CA")

    _receive(shopify_shop, "1", _snapshot(0, contact=contact))

    state = CartState.objects.get()
    assert (state.email, state.phone, state.locale, state.consent) == (
        "a@example.com",
        "+1 555 0100",
        "en-CA",
        {},
    )


def test_parallel_deliveries_of_one_checkout_bind_one_cart(committed_store):
    """Every delivery of one store and platform takes the store's inbound lock: parallel first
    deliveries cannot make two carts or lose a ref."""
    store, _ = committed_store
    shop = Shop(
        store.pk,
        services.connection_create(
            store_id=store.pk, platform="shopify", shop_domain=f"p-{store.pk}.myshopify.com"
        ),
    )
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def deliver(n: int) -> None:
        try:
            refs = ("cart:c1", f"checkout:k{n}") if n % 2 else (f"order:{n}", "cart:c1")
            fact: Fact = (
                CheckoutSnapshot(refs, NOW + timedelta(seconds=n), "USD", (Line("A", "A", 1, 100),))
                if n % 2
                else OrderPlaced(refs, "o1", 100, "USD", NOW)
            )
            barrier.wait(timeout=10)
            _receive(shop, f"p-{n}", fact)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            db_connection.close()

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    refs = PlatformRef.objects.filter(store_id=store.pk)
    assert set(refs.values_list("cart", flat=True)) == {"shopify-cart-c1"}
    assert sorted(refs.values_list("ref", flat=True)) == [
        "cart:c1",
        "checkout:k1",
        "checkout:k3",
        "order:0",
        "order:2",
    ]
    assert InboundDelivery.objects.filter(store_id=store.pk).count() == 4
    assert CartState.objects.filter(store_id=store.pk).count() == 1


# The WooCommerce and Saleor views (their adapters: integrations/platforms/) -----------------------


@pytest.mark.parametrize("platform", ["woocommerce", "saleor"])
def test_a_store_without_a_connection_is_a_json_404(shopify_shop, platform):
    response = APIClient().post(
        f"/api/v1/webhooks/{platform}/{shopify_shop.store_id}",
        data=b"{}",
        content_type="application/json",
    )

    assert response.status_code == 404
    assert response.json() == {
        "detail": "No active connection for this shop or store.",
        "code": "unknown_shop",
    }


def test_a_signed_woocommerce_delivery_goes_through_the_pipeline_once(shopify_shop):
    services.connection_create(
        store_id=shopify_shop.store_id, platform="woocommerce", webhook_secret="wc-secret"
    )
    body = fixture_bytes("woocommerce", "order_created.json")
    signature = base64.b64encode(hmac.new(b"wc-secret", body, hashlib.sha256).digest()).decode()
    headers: dict[str, Any] = {
        "HTTP_X_WC_WEBHOOK_SIGNATURE": signature,
        "HTTP_X_WC_WEBHOOK_DELIVERY_ID": "wc-1",
        "HTTP_X_WC_WEBHOOK_TOPIC": "order.created",
    }
    url = f"/api/v1/webhooks/woocommerce/{shopify_shop.store_id}"

    first = APIClient().post(url, data=body, content_type="application/json", **headers)
    again = APIClient().post(url, data=body, content_type="application/json", **headers)
    unsigned = APIClient().post(
        url,
        data=body,
        content_type="application/json",
        **{**headers, "HTTP_X_WC_WEBHOOK_SIGNATURE": "bm90IGl0"},
    )

    assert first.status_code == 200
    assert first.json()["outcome"] == "recorded"
    assert again.json() == {"outcome": "duplicate", "events": 0}
    assert unsigned.status_code == 401
    delivery = InboundDelivery.objects.get(store_id=shopify_shop.store_id, platform="woocommerce")
    assert (delivery.delivery_id, delivery.topic) == ("wc-1", "order.created")
