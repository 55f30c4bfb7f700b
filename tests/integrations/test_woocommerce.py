"""WooCommerce's order webhooks: signature, ping, and each status read into facts."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rest_framework.test import APIClient

from carts import services as services_carts
from carts.models import CartEvent, CartState
from carts.services import NewEvent
from carts.sources import Source
from integrations import services
from integrations.facts import (
    BadDelivery,
    CheckoutDeleted,
    CheckoutSnapshot,
    Contact,
    Ignored,
    Line,
    OrderPlaced,
    OrderRefunded,
)
from integrations.models import InboundDelivery
from integrations.platforms.woocommerce import ADAPTER

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "platforms" / "woocommerce"
SECRET = "wc-webhook-secret"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def sign(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def headers(body: bytes, topic: str = "order.updated", delivery: str = "d-1") -> dict[str, str]:
    return {
        "X-WC-Webhook-Signature": sign(body),
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Delivery-ID": delivery,
        "X-WC-Webhook-Resource": "order",
    }


def read(order: dict[str, Any], topic: str = "order.updated", **connection: Any):
    body = json.dumps(order).encode()
    return ADAPTER.read(
        headers=headers(body, topic), body=body, connection=SimpleNamespace(**connection)
    )


@pytest.fixture
def connection(store):
    return services.connection_create(
        store_id=store.pk, platform="woocommerce", webhook_secret=SECRET
    )


# Signatures


def test_a_body_signed_with_the_connections_secret_passes(connection):
    body = json.dumps(fixture("order_created.json")).encode()

    ADAPTER.verify(connection=connection, headers=headers(body), body=body)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda h, b: ({**h, "X-WC-Webhook-Signature": sign(b, "other")}, b), id="key"),
        pytest.param(lambda h, b: (h, b[:-1]), id="truncated-body"),
        pytest.param(lambda h, b: (h, b.replace(b"29.35", b"0.35")), id="tampered-body"),
        pytest.param(
            lambda h, b: ({k: v for k, v in h.items() if "Signature" not in k}, b), id="missing"
        ),
        pytest.param(lambda h, b: ({**h, "X-WC-Webhook-Signature": "é"}, b), id="not-ascii"),
    ],
)
def test_a_body_not_signed_with_the_connections_secret_is_refused_401(connection, change):
    body = json.dumps(fixture("order_created.json")).encode()
    given_headers, given_body = change(headers(body), body)

    with pytest.raises(BadDelivery) as refused:
        ADAPTER.verify(connection=connection, headers=given_headers, body=given_body)

    assert refused.value.status == 401


def test_headers_are_found_whatever_their_case(connection):
    body = b'{"id": 1}'
    lowered = {k.lower(): v for k, v in headers(body).items()}

    ADAPTER.verify(connection=connection, headers=lowered, body=body)


def test_a_connection_without_a_secret_refuses_every_signed_delivery(store):
    connection = services.connection_create(store_id=store.pk, platform="woocommerce")
    body = b'{"id": 1}'

    with pytest.raises(BadDelivery) as refused:
        ADAPTER.verify(
            connection=connection,
            headers={**headers(body), "X-WC-Webhook-Signature": sign(body, "")},
            body=body,
        )

    assert refused.value.status == 401


def test_the_ping_woocommerce_sends_when_a_webhook_is_saved_passes_and_is_ignored(connection):
    body = b"webhook_id=42"
    ping_headers = {"Content-Type": "application/x-www-form-urlencoded"}

    ADAPTER.verify(connection=connection, headers=ping_headers, body=body)
    delivery = ADAPTER.read(headers=ping_headers, body=body)

    assert delivery.delivery_id == "ping:42"
    assert delivery.topic == "ping"
    assert delivery.facts == (Ignored("ping: webhook 42 was saved"),)


def test_a_ping_shaped_body_with_a_topic_is_not_a_ping(connection):
    body = b"webhook_id=42"

    with pytest.raises(BadDelivery) as refused:
        ADAPTER.verify(
            connection=connection,
            headers={"X-WC-Webhook-Topic": "order.updated", "X-WC-Webhook-Signature": "x"},
            body=body,
        )

    assert refused.value.status == 401


# Statuses


def test_a_processing_order_is_placed_with_its_total_codes_contact_and_lines():
    order = fixture("order_created.json")
    order["coupon_lines"] = [{"id": 1, "code": "SAVE10"}, {"id": 2, "code": "SAVE10"}]
    order["meta_data"].append({"id": 9, "key": "_cart_recovery_cart", "value": "cart-abc"})

    delivery = read(order, "order.created")

    assert delivery.delivery_id == "d-1"
    assert delivery.topic == "order.created"
    assert delivery.facts == (
        OrderPlaced(
            refs=("order:727", "ours:cart-abc"),
            order_id="727",
            total=2935,
            currency="USD",
            placed_at=datetime(2017, 3, 22, 19, 28, 8, tzinfo=UTC),
            discount_codes=("SAVE10",),
            contact=Contact(email="john.doe@example.com", phone="(555) 555-5555"),
            lines=(
                Line(sku="product:93", name="Woo Single #1", quantity=2, unit_price=300),
                Line(
                    sku="Bar3",
                    name="Ship Your Idea \u2013 Color: Black, Size: M Test",
                    quantity=1,
                    unit_price=1200,
                ),
            ),
        ),
    )


def test_a_completed_order_is_placed_too_and_unpaid_falls_back_to_created_time():
    order = fixture("order_updated.json")
    order["date_paid_gmt"] = None

    (fact,) = read(order).facts

    assert isinstance(fact, OrderPlaced)
    assert fact.placed_at == datetime(2017, 3, 22, 19, 28, 2, tzinfo=UTC)
    assert fact.refs == ("order:727",)


@pytest.mark.parametrize("status", ["pending", "on-hold", "failed", "checkout-draft"])
def test_an_order_waiting_for_payment_is_the_shoppers_checkout(status):
    order = fixture("order_created.json")
    order["status"] = status
    order["meta_data"].append({"id": 9, "key": "_cart_recovery_cart", "value": "cart-abc"})

    (fact,) = read(order, storefront_url="https://shop.example/").facts

    assert fact == CheckoutSnapshot(
        refs=("order:727", "ours:cart-abc"),
        updated_at=datetime(2017, 3, 22, 19, 28, 8, tzinfo=UTC),
        currency="USD",
        lines=(
            Line(sku="product:93", name="Woo Single #1", quantity=2, unit_price=300),
            Line(
                sku="Bar3",
                name="Ship Your Idea \u2013 Color: Black, Size: M Test",
                quantity=1,
                unit_price=1200,
            ),
        ),
        contact=Contact(email="john.doe@example.com", phone="(555) 555-5555"),
        checkout=True,
        restore_url=(
            "https://shop.example/checkout/order-pay/727/"
            "?pay_for_order=true&key=wc_order_58d2d042d1d"
        ),
    )


def test_without_a_storefront_url_the_restore_link_is_the_orders_payment_url():
    order = fixture("order_created.json")
    order["status"] = "pending"
    order["payment_url"] = "https://example.com/checkout/order-pay/727/?key=wc_order_58d2d042d1d"

    (fact,) = read(order).facts

    assert isinstance(fact, CheckoutSnapshot)
    assert fact.restore_url == order["payment_url"]


def test_a_variation_without_sku_is_named_by_its_variation_id():
    order = fixture("order_created.json")
    order["status"] = "pending"
    order["line_items"][1]["sku"] = ""

    (fact,) = read(order).facts

    assert isinstance(fact, CheckoutSnapshot)
    assert [line.sku for line in fact.lines] == ["product:93", "variation:23"]


def test_a_refunded_order_is_placed_then_refunded_once_per_refund():
    order = fixture("order_updated.json")
    order["status"] = "refunded"
    order["refunds"] = [{"id": 801, "reason": "", "total": "-9.35"}, {"id": 800, "total": "-20"}]

    facts = read(order).facts

    assert [type(f) for f in facts] == [OrderPlaced, OrderRefunded, OrderRefunded]
    at = datetime(2017, 3, 22, 19, 30, 35, tzinfo=UTC)
    assert facts[1:] == (
        OrderRefunded(("order:727",), "727", 935, "USD", refund_id="801", refunded_at=at),
        OrderRefunded(("order:727",), "727", 2000, "USD", refund_id="800", refunded_at=at),
    )


def test_a_refunded_order_without_its_refunds_listed_is_refunded_in_full():
    order = fixture("order_updated.json")
    order["status"] = "refunded"

    facts = read(order).facts

    assert facts[1] == OrderRefunded(
        ("order:727",),
        "727",
        2935,
        "USD",
        refund_id="727:full",
        refunded_at=datetime(2017, 3, 22, 19, 30, 35, tzinfo=UTC),
    )


def test_a_partial_refund_of_a_completed_order_comes_with_the_order():
    order = fixture("order_updated.json")
    order["refunds"] = [{"id": 801, "total": "-5.00"}]

    facts = read(order).facts

    assert [type(f) for f in facts] == [OrderPlaced, OrderRefunded]
    assert (facts[1].amount, facts[1].refund_id) == (500, "801")


def test_a_cancelled_order_is_ignored():
    order = fixture("order_updated.json")
    order["status"] = "cancelled"

    assert read(order).facts == (Ignored("cancelled: the order never completed"),)


def test_a_deleted_order_deletes_the_checkout_it_was():
    assert read({"id": 727}, "order.deleted").facts == (CheckoutDeleted(refs=("order:727",)),)


def test_topics_other_than_orders_are_ignored_without_reading_the_body():
    delivery = read({"id": 1}, "product.updated")

    assert delivery.facts == (Ignored("topic product.updated is not mapped"),)


def test_an_order_id_beyond_2_53_stays_exact():
    order = fixture("order_created.json")
    order["id"] = 2**63 - 1
    body = json.dumps(order).encode()

    (fact,) = ADAPTER.read(headers=headers(body), body=body).facts

    assert isinstance(fact, OrderPlaced)
    assert fact.order_id == "9223372036854775807"


# Bad input


def _broken(path: str, value: Any) -> dict[str, Any]:
    order = copy.deepcopy(fixture("order_created.json"))
    target: Any = order
    *parents, last = path.split(".")
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    target[int(last) if last.isdigit() else last] = value
    return order


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("total", "NaN", "total"),
        ("total", "1e400", "total"),
        ("total", "-1.00", "total"),
        ("total", {"x": 1}, "total"),
        ("currency", "DOLLARS", "currency"),
        ("id", "1 OR 1=1", "id"),
        ("id", True, "id"),
        ("line_items", {"a": 1}, "line_items"),
        ("line_items.0.quantity", "2", "line_items.0.quantity"),
        ("line_items.0.quantity", 10**9, "line_items.0.quantity"),
        ("line_items.0.price", "abc", "line_items.0.price"),
        ("date_paid_gmt", "yesterday", "date_paid_gmt"),
        ("date_paid_gmt", "9999-12-31T23:59:59", "date_paid_gmt"),
        ("refunds", [{"id": 1, "total": "x"}], "refunds.0.total"),
    ],
)
def test_a_body_we_cannot_read_is_a_400_naming_its_field(path, value, field):
    order = _broken(path, value)

    with pytest.raises(BadDelivery) as refused:
        read(order)

    assert refused.value.status == 400
    assert list(refused.value.fields) == [field]


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b"null", b"[" * 100_000, b'{"id": 727'])
def test_a_body_that_is_not_a_json_object_is_a_400(body):
    with pytest.raises(BadDelivery) as refused:
        ADAPTER.read(headers=headers(body), body=body)

    assert refused.value.status == 400
    assert refused.value.fields == {"body": ["Expected a JSON object."]}


@pytest.mark.parametrize("missing", ["X-WC-Webhook-Delivery-ID", "X-WC-Webhook-Topic"])
def test_a_delivery_without_its_id_or_topic_is_a_400(missing):
    body = b'{"id": 727}'
    given = {k: v for k, v in headers(body).items() if k != missing}

    with pytest.raises(BadDelivery) as refused:
        ADAPTER.read(headers=given, body=body)

    assert refused.value.status == 400
    assert list(refused.value.fields) == [missing]


def test_an_invalid_email_or_phone_is_left_out_and_the_order_still_counts():
    order = fixture("order_created.json")
    order["billing"]["phone"] = "call me"
    order["status"] = "pending"

    (fact,) = read(order).facts
    assert isinstance(fact, CheckoutSnapshot)
    assert fact.contact == Contact(email="john.doe@example.com", phone="")

    order["billing"]["email"] = "not an email"
    (fact,) = read(order).facts
    assert isinstance(fact, CheckoutSnapshot)
    assert fact.contact is None


def test_a_cart_token_we_could_not_have_issued_is_not_a_ref():
    order = fixture("order_created.json")
    order["meta_data"].append({"id": 9, "key": "_cart_recovery_cart", "value": "../../etc"})

    (fact,) = read(order).facts

    assert isinstance(fact, OrderPlaced)
    assert fact.refs == ("order:727",)


# Through the endpoint (integrations.inbound's pipeline)


def post(store_id: int, order: dict[str, Any] | bytes, topic: str = "order.updated", **kw: Any):
    body = order if isinstance(order, bytes) else json.dumps(order).encode()
    given = headers(body, topic, kw.pop("delivery", str(uuid.uuid4())))
    if "signature" in kw:
        given["X-WC-Webhook-Signature"] = kw.pop("signature")
    meta: dict[str, Any] = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in given.items()}
    return APIClient().post(
        f"/api/v1/webhooks/woocommerce/{store_id}",
        data=body,
        content_type="application/json",
        **meta,
    )


def pending(minute: int = 20) -> dict[str, Any]:
    order = fixture("order_created.json")
    order["status"] = "pending"
    order["date_paid_gmt"] = None
    order["date_modified_gmt"] = f"2017-03-22T19:{minute:02d}:00"
    return order


def cart_of(store_id: int) -> dict[str, Any]:
    state = CartState.objects.get(store_id=store_id, token="woocommerce-order-727")
    return {
        "status": state.status,
        "items": [(i["sku"], i["quantity"], i["unit_price"]) for i in state.items],
        "email": state.email,
        "order_id": state.order_id,
        "order_total": state.order_total,
        "refunded": state.refunded,
    }


def types_of(store_id: int) -> list[str]:
    return list(
        CartEvent.objects.filter(store_id=store_id)
        .order_by("position")
        .values_list("type", flat=True)
    )


CONVERTED = {
    "status": "converted",
    "items": [("product:93", 2, 300), ("Bar3", 1, 1200)],
    "email": "john.doe@example.com",
    "order_id": "727",
    "order_total": 2935,
    "refunded": 0,
}


def test_a_checkout_then_its_order_convert_the_cart_once(connection):
    store_id = connection.store_id

    first = post(store_id, pending(), "order.created")
    second = post(store_id, fixture("order_updated.json"))
    third = post(store_id, fixture("order_created.json"))

    assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
    assert first.json() == {"outcome": "recorded", "events": 4}
    assert types_of(store_id) == [
        "cart.item_added",
        "cart.item_added",
        "checkout.started",
        "checkout.contact_captured",
        "order.placed",
    ]
    assert cart_of(store_id) == CONVERTED


def test_deliveries_in_any_order_end_in_the_same_cart(connection):
    store_id = connection.store_id

    responses = [
        post(store_id, fixture("order_updated.json")),
        post(store_id, pending(25)),
        post(store_id, pending(20), "order.created"),
    ]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert cart_of(store_id) == CONVERTED
    assert types_of(store_id).count("order.placed") == 1


def test_a_refund_is_recorded_once_whatever_the_deliveries(connection):
    store_id = connection.store_id
    order = fixture("order_updated.json")
    order["status"] = "refunded"
    order["refunds"] = [{"id": 801, "total": "-29.35"}]

    post(store_id, order)
    post(store_id, order)

    assert cart_of(store_id)["refunded"] == 2935
    assert types_of(store_id).count("order.refunded") == 1


def test_a_wrong_signature_is_a_401_and_nothing_is_stored(connection):
    body = json.dumps(fixture("order_created.json")).encode()

    response = post(connection.store_id, body, signature=sign(body, "not-the-secret"))

    assert response.status_code == 401
    assert response.json()["code"] == "bad_signature"
    assert InboundDelivery.objects.filter(store_id=connection.store_id).count() == 0
    assert types_of(connection.store_id) == []


def test_a_replayed_delivery_id_stores_nothing_new(connection):
    order = pending()

    first = post(connection.store_id, order, delivery="same-id")
    order["line_items"][0]["quantity"] = 5
    replay = post(connection.store_id, order, delivery="same-id")

    assert first.json() == {"outcome": "recorded", "events": 4}
    assert replay.json() == {"outcome": "duplicate", "events": 0}
    assert cart_of(connection.store_id)["items"] == [("product:93", 2, 300), ("Bar3", 1, 1200)]


def test_a_truncated_body_is_a_401_with_the_original_signature_and_a_400_signed(connection):
    body = json.dumps(fixture("order_created.json")).encode()
    cut = body[: len(body) // 2]

    unsigned = post(connection.store_id, cut, signature=sign(body))
    signed = post(connection.store_id, cut)

    assert unsigned.status_code == 401
    assert signed.status_code == 400
    assert signed.json()["body"] == ["Expected a JSON object."]
    assert InboundDelivery.objects.filter(store_id=connection.store_id).count() == 0


def test_the_ping_is_answered_200_so_woocommerce_saves_the_webhook(connection):
    response = APIClient().post(
        f"/api/v1/webhooks/woocommerce/{connection.store_id}",
        data=b"webhook_id=42",
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 200
    assert response.json() == {"outcome": "ignored", "events": 0}
    # Unsigned: anyone can send one. It writes nothing and is not the platform delivering.
    connection.refresh_from_db()
    assert connection.last_delivery_at is None
    assert not InboundDelivery.objects.filter(store_id=connection.store_id).exists()


def test_an_order_carrying_our_cart_token_joins_the_snippets_cart(connection):
    """The shop copies the snippet's cart token into the order's meta (`_cart_recovery_cart`):
    the order converts that very cart, not a new one named after the order."""
    store_id = connection.store_id
    services_carts.events_append(
        store_id=store_id,
        source=Source.browser("session-1"),
        events=[
            NewEvent(
                event_id=uuid.uuid4(),
                cart="snippet-cart-1",
                type="cart.item_added",
                schema_version=2,
                occurred_at=datetime(2017, 3, 22, 19, 0, tzinfo=UTC),
                data={
                    "sku": "Bar3",
                    "name": "Ship Your Idea",
                    "quantity": 1,
                    "unit_price": 1200,
                    "currency": "USD",
                },
            )
        ],
    )
    order = fixture("order_created.json")
    order["meta_data"].append({"id": 9, "key": "_cart_recovery_cart", "value": "snippet-cart-1"})

    assert post(store_id, order, "order.created").json() == {"outcome": "recorded", "events": 2}

    assert list(
        CartEvent.objects.filter(store_id=store_id, cart="snippet-cart-1")
        .order_by("version")
        .values_list("type", "source")
    ) == [
        ("cart.item_added", "browser"),
        ("checkout.contact_captured", "platform"),
        ("order.placed", "platform"),
    ]
    state = CartState.objects.get(store_id=store_id, token="snippet-cart-1")
    assert (state.status, state.order_id, state.order_total) == ("converted", "727", 2935)
    assert not CartState.objects.filter(store_id=store_id, token="woocommerce-order-727").exists()
