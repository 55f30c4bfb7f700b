"""WooCommerce's order webhooks: signature, ping, and each status read into facts."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

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
            refs=("order:727", "cart:cart-abc"),
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
        refs=("order:727", "cart:cart-abc"),
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
