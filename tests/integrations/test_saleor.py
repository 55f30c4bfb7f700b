"""Saleor's webhooks: JWS signatures checked against the instance's JWKS (served from a local
HTTP server), and each event's payload read into facts."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from rest_framework.test import APIClient

from carts import services as carts_services
from carts.models import CartEvent, CartState
from integrations import services
from integrations.facts import (
    BadDelivery,
    CheckoutSnapshot,
    Contact,
    Ignored,
    Line,
    OrderPlaced,
    OrderRefunded,
)
from integrations.models import InboundDelivery
from integrations.platforms import saleor, saleor_jwks
from integrations.platforms.saleor import ADAPTER

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "platforms" / "saleor"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CHECKOUT_TOKEN = "3f9ad3b2-0d0d-4f43-9c8b-6f1f0c2a9e11"
CHECKOUT_ID = base64.b64encode(f"Checkout:{CHECKOUT_TOKEN}".encode()).decode()
ORDER_ID = base64.b64encode(b"Order:c8fcac18-1d9c-45dd-810f-0b312ba3cd63").decode()


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "kid": kid,
        "e": b64url(numbers.e.to_bytes(3, "big")),
        "n": b64url(numbers.n.to_bytes(256, "big")),
    }


def sign(body: bytes, key: rsa.RSAPrivateKey = KEY, kid: str = "k1", **header: Any) -> str:
    """As Saleor's jws_encode (PyJWT, detached payload): header..signature, with the raw body
    in the signing input."""
    protected = {"alg": "RS256", "b64": False, "crit": ["b64"], "kid": kid, "typ": "JWT", **header}
    encoded = b64url(json.dumps(protected, separators=(",", ":"), sort_keys=True).encode())
    signed = encoded.encode() + b"." + body
    return f"{encoded}..{b64url(key.sign(signed, padding.PKCS1v15(), hashes.SHA256()))}"


class Jwks:
    """A Saleor instance's /.well-known/jwks.json on 127.0.0.1, in a thread."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": [jwk(KEY, "k1")]}
        self.status = 200
        self.requests = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.requests += 1
                body = json.dumps(jwks.document).encode()
                self.send_response(jwks.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/.well-known/jwks.json"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[Jwks]:
    server = Jwks()
    yield server
    server.close()


@pytest.fixture
def jwks(jwks_server: Jwks) -> Jwks:
    jwks_server.document = {"keys": [jwk(KEY, "k1")]}
    jwks_server.status = 200
    jwks_server.requests = 0
    saleor.JWKS.clear()
    return jwks_server


def verify(jwks: Jwks, body: bytes, signature: str | None) -> None:
    headers = {"Saleor-Event": "checkout_updated"}
    if signature is not None:
        headers["Saleor-Signature"] = signature
    ADAPTER.verify(connection=SimpleNamespace(jwks_url=jwks.url), headers=headers, body=body)


def refused(jwks: Jwks, body: bytes, signature: str | None) -> BadDelivery:
    with pytest.raises(BadDelivery) as caught:
        verify(jwks, body, signature)
    return caught.value


BODY = b'{"checkout": {"token": "t"}}'


# Signatures


def test_a_body_signed_as_saleor_signs_passes_and_the_keys_are_fetched_once(jwks):
    verify(jwks, BODY, sign(BODY))
    verify(jwks, b"{}", sign(b"{}"))

    assert jwks.requests == 1


def test_headers_are_found_whatever_their_case_and_the_legacy_x_prefix(jwks):
    ADAPTER.verify(
        connection=SimpleNamespace(jwks_url=jwks.url),
        headers={"x-saleor-signature": sign(BODY)},
        body=BODY,
    )


def test_the_jwks_is_found_at_the_api_urls_origin_when_no_jwks_url_is_set(jwks):
    api_url = jwks.url.replace("/.well-known/jwks.json", "/graphql/")

    ADAPTER.verify(
        connection=SimpleNamespace(jwks_url="", api_url=api_url),
        headers={"Saleor-Signature": sign(BODY)},
        body=BODY,
    )

    assert jwks.requests == 1


def test_a_signature_made_with_another_key_is_refused_401(jwks):
    assert refused(jwks, BODY, sign(BODY, OTHER_KEY)).status == 401


@pytest.mark.parametrize(
    "body", [BODY[:-1], BODY + b" ", BODY.replace(b'"t"', b'"u"')], ids=["cut", "grown", "changed"]
)
def test_a_tampered_body_is_refused_401(jwks, body):
    assert refused(jwks, body, sign(BODY)).status == 401


def test_an_unknown_kid_refetches_the_keys_once_then_is_refused_401(jwks, monkeypatch):
    monkeypatch.setattr(saleor_jwks, "JWKS_REFETCH_SECONDS", 0.0)
    verify(jwks, BODY, sign(BODY))

    error = refused(jwks, BODY, sign(BODY, kid="k9"))

    assert error.status == 401
    assert error.message == f"Saleor's keys at {jwks.url} have no key 'k9'."
    assert jwks.requests == 2


def test_forged_kids_refetch_the_keys_at_most_once_per_window(jwks):
    verify(jwks, BODY, sign(BODY))

    statuses = [refused(jwks, BODY, sign(BODY, kid=f"forged-{i}")).status for i in range(5)]

    assert statuses == [401] * 5
    assert jwks.requests == 1  # fetched less than JWKS_REFETCH_SECONDS ago: not again


def test_a_rotated_key_is_found_by_refetching_on_its_kid(jwks, monkeypatch):
    monkeypatch.setattr(saleor_jwks, "JWKS_REFETCH_SECONDS", 0.0)
    verify(jwks, BODY, sign(BODY))
    jwks.document = {"keys": [jwk(KEY, "k1"), jwk(OTHER_KEY, "k2")]}

    verify(jwks, BODY, sign(BODY, OTHER_KEY, kid="k2"))

    assert jwks.requests == 2


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param("", id="missing"),
        pytest.param("abc", id="not-a-jws"),
        pytest.param(None, id="no-header"),
        pytest.param(hmac.new(b"secret", BODY, hashlib.sha256).hexdigest(), id="legacy-hmac"),
        pytest.param("e30..c2ln", id="no-alg"),
        pytest.param("!!..!!", id="not-base64"),
    ],
)
def test_a_signature_we_cannot_read_is_refused_401_without_fetching_keys(jwks, signature):
    assert refused(jwks, BODY, signature).status == 401
    assert jwks.requests == 0


def test_an_hs256_or_none_alg_is_refused_401(jwks):
    for alg in ("HS256", "none"):
        assert refused(jwks, BODY, sign(BODY, alg=alg)).status == 401
    assert jwks.requests == 0


def test_an_unknown_critical_parameter_is_refused_401(jwks):
    assert refused(jwks, BODY, sign(BODY, crit=["b64", "exp"])).status == 401


def test_keys_that_cannot_be_fetched_are_a_503_saleor_retries(jwks, caplog):
    jwks.status = 500

    error = refused(jwks, BODY, sign(BODY))

    assert error.status == 503
    # Where and why goes to the log, not to the anonymous caller.
    assert error.message == "Saleor's signing keys could not be fetched; retry later."
    assert f"HTTP 500 from {jwks.url}" in caplog.text


def test_after_a_failed_fetch_requests_are_refused_at_once_for_a_while(jwks):
    jwks.status = 500
    refused(jwks, BODY, sign(BODY))
    jwks.status = 200

    again = refused(jwks, BODY, sign(BODY))

    assert (again.status, jwks.requests) == (503, 1)  # no second fetch within the window


def test_keys_already_held_still_verify_while_the_jwks_is_down(jwks, monkeypatch):
    verify(jwks, BODY, sign(BODY))
    monkeypatch.setattr(saleor_jwks, "JWKS_TTL_SECONDS", 0.0)
    jwks.status = 502

    verify(jwks, BODY, sign(BODY))

    assert jwks.requests == 2


def test_a_connection_without_a_jwks_or_api_url_refuses_401(jwks):
    with pytest.raises(BadDelivery) as caught:
        ADAPTER.verify(
            connection=SimpleNamespace(jwks_url="", api_url=""),
            headers={"Saleor-Signature": sign(BODY)},
            body=BODY,
        )

    assert caught.value.status == 401


# Payloads: the documented subscription


def money(amount: float, currency: str = "EUR") -> dict[str, Any]:
    return {"gross": {"amount": amount, "currency": currency}}


def checkout_event(**changes: Any) -> dict[str, Any]:
    checkout = {
        "id": CHECKOUT_ID,
        "token": CHECKOUT_TOKEN,
        "updatedAt": "2026-11-01T12:00:05.123456+00:00",
        "email": "ada@example.com",
        "user": None,
        "voucherCode": None,
        "totalPrice": money(41.97),
        "lines": [
            {
                "quantity": 3,
                "variant": {
                    "id": "UHJvZHVjdFZhcmlhbnQ6MQ==",
                    "sku": "TEA-1",
                    "name": "250 g",
                    "product": {"name": "Green tea"},
                },
                "unitPrice": money(13.99),
                "totalPrice": money(41.97),
            }
        ],
        **changes,
    }
    return {
        "__typename": "CheckoutUpdated",
        "issuedAt": "2026-11-01T12:00:06+00:00",
        "checkout": checkout,
    }


def order(**changes: Any) -> dict[str, Any]:
    return {
        "id": ORDER_ID,
        "number": "1042",
        "checkoutId": CHECKOUT_ID,
        "created": "2026-11-01T12:10:00+00:00",
        "updatedAt": "2026-11-01T12:20:00+00:00",
        "userEmail": "ada@example.com",
        "voucherCode": "BACK10",
        "total": money(37.77),
        "totalRefunded": {"amount": 0.0, "currency": "EUR"},
        "lines": [
            {
                "productSku": "TEA-1",
                "productVariantId": "UHJvZHVjdFZhcmlhbnQ6MQ==",
                "productName": "Green tea",
                "variantName": "250 g",
                "quantity": 3,
                "unitPrice": money(12.59),
            }
        ],
        "transactions": [],
        "payments": [],
        **changes,
    }


def as_sent(event: str, payload: Any) -> Any:
    """The payload as Saleor sends it for ``event``: its __typename is the event's
    (``checkout_created`` -> ``CheckoutCreated``)."""
    if isinstance(payload, dict) and "__typename" in payload:
        return {**payload, "__typename": event.title().replace("_", "")}
    return payload


def read(event: str, payload: Any, **connection: Any):
    body = json.dumps(as_sent(event, payload)).encode()
    return ADAPTER.read(
        headers={"Saleor-Event": event}, body=body, connection=SimpleNamespace(**connection)
    )


TEA = Line(sku="TEA-1", name="Green tea / 250 g", quantity=3, unit_price=1399)


def test_a_checkout_update_is_a_snapshot_of_the_checkout():
    delivery = read("checkout_updated", checkout_event(), storefront_url="https://shop.example/")

    assert delivery.topic == "checkout_updated"
    assert delivery.facts == (
        CheckoutSnapshot(
            refs=(f"checkout:{CHECKOUT_TOKEN}",),
            updated_at=datetime(2026, 11, 1, 12, 0, 5, 123456, tzinfo=UTC),
            currency="EUR",
            lines=(TEA,),
            contact=Contact(email="ada@example.com"),
            checkout=True,
            restore_url=f"https://shop.example/checkout?checkout={CHECKOUT_ID.replace('=', '%3D')}",
        ),
    )


def test_saleor_sends_no_delivery_id_so_a_delivery_is_its_event_and_body_hash():
    payload = checkout_event()
    updated_body = json.dumps(as_sent("checkout_updated", payload)).encode()
    created_body = json.dumps(as_sent("checkout_created", payload)).encode()

    first = read("checkout_updated", payload)
    created = read("CHECKOUT_CREATED", as_sent("checkout_created", payload))

    assert first.delivery_id == f"checkout_updated:{hashlib.sha256(updated_body).hexdigest()}"
    assert created.delivery_id == f"checkout_created:{hashlib.sha256(created_body).hexdigest()}"
    assert read("checkout_updated", payload).delivery_id == first.delivery_id


def test_a_checkout_without_email_takes_its_users_and_without_token_its_ids():
    payload = checkout_event(email=None, user={"email": "bo@example.com"}, token=None)
    payload["checkout"]["updatedAt"] = None

    (fact,) = read("checkout_created", payload).facts

    assert isinstance(fact, CheckoutSnapshot)
    assert fact.refs == (f"checkout:{CHECKOUT_TOKEN}",)
    assert fact.contact == Contact(email="bo@example.com")
    assert fact.updated_at == datetime(2026, 11, 1, 12, 0, 6, tzinfo=UTC)  # the event's issuedAt
    assert fact.restore_url == ""


def test_the_same_event_wrapped_as_a_graphql_result_is_read_alike():
    wrapped = {"data": {"event": checkout_event()}}

    assert (
        read("checkout_updated", wrapped).facts == read("checkout_updated", checkout_event()).facts
    )


@pytest.mark.parametrize("event", ["order_created", "order_fully_paid"])
def test_an_order_is_placed_with_its_checkout_total_and_voucher(event):
    (fact,) = read(event, {"order": order()}).facts

    assert fact == OrderPlaced(
        refs=(f"order:{ORDER_ID}", f"checkout:{CHECKOUT_TOKEN}"),
        order_id=ORDER_ID,
        total=3777,
        currency="EUR",
        placed_at=datetime(2026, 11, 1, 12, 10, tzinfo=UTC),
        discount_codes=("BACK10",),
        contact=Contact(email="ada@example.com"),
        lines=(Line(sku="TEA-1", name="Green tea / 250 g", quantity=3, unit_price=1259),),
    )


def test_a_zero_decimal_currency_converts_to_its_own_minor_units():
    (fact,) = read("order_created", {"order": order(total=money(4200, "JPY"), lines=[])}).facts

    assert isinstance(fact, OrderPlaced)
    assert (fact.total, fact.currency) == (4200, "JPY")


def test_a_refund_is_one_fact_per_successful_refund_transaction_event():
    refunded = order(
        transactions=[
            {
                "events": [
                    {
                        "id": "ev-1",
                        "type": "CHARGE_SUCCESS",
                        "createdAt": "2026-11-01T12:11:00Z",
                        "amount": {"amount": 37.77, "currency": "EUR"},
                    },
                    {
                        "id": "ev-2",
                        "type": "REFUND_SUCCESS",
                        "createdAt": "2026-11-02T09:00:00Z",
                        "amount": {"amount": 12.59, "currency": "EUR"},
                    },
                    {
                        "id": "ev-3",
                        "type": "REFUND_FAILURE",
                        "createdAt": "2026-11-02T09:01:00Z",
                        "amount": {"amount": 25.18, "currency": "EUR"},
                    },
                ]
            }
        ],
        payments=[
            {
                "transactions": [
                    {
                        "id": "tr-9",
                        "kind": "REFUND",
                        "isSuccess": True,
                        "created": "2026-11-03T10:00:00Z",
                        "amount": {"amount": 5, "currency": "EUR"},
                    },
                    {
                        "id": "tr-10",
                        "kind": "REFUND",
                        "isSuccess": False,
                        "created": "2026-11-03T10:00:00Z",
                        "amount": {"amount": 5, "currency": "EUR"},
                    },
                ]
            }
        ],
    )

    placed, *refunds = read("order_refunded", {"order": refunded}).facts

    assert isinstance(placed, OrderPlaced)
    assert refunds == [
        OrderRefunded(
            (f"order:{ORDER_ID}",),
            ORDER_ID,
            1259,
            "EUR",
            "ev-2",
            datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
        ),
        OrderRefunded(
            (f"order:{ORDER_ID}",),
            ORDER_ID,
            500,
            "EUR",
            "tr-9",
            datetime(2026, 11, 3, 10, 0, tzinfo=UTC),
        ),
    ]


def test_a_refund_without_its_refunds_listed_counts_the_orders_refunded_total_once():
    refunded = order(
        totalRefunded={"amount": 37.77, "currency": "EUR"}, transactions=None, payments=None
    )

    facts = read("order_refunded", {"order": refunded}).facts

    assert facts[1:] == (
        OrderRefunded(
            (f"order:{ORDER_ID}",),
            ORDER_ID,
            3777,
            "EUR",
            f"{ORDER_ID}:refunded",
            datetime(2026, 11, 1, 12, 20, tzinfo=UTC),
        ),
    )


def test_events_we_do_not_map_are_ignored_without_reading_the_body():
    delivery = read("product_updated", [1, 2, 3])

    assert delivery.facts == (Ignored("event product_updated is not mapped"),)


# Payloads: the fixtures


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_the_minimal_order_created_subscription_has_no_total_and_is_ignored_saying_why():
    body = fixture_bytes("order_created_subscription_payload.json")

    delivery = ADAPTER.read(headers={"saleor-event": "order_created"}, body=body)

    assert delivery.facts == (
        Ignored(
            "order without total: the webhook's subscription query lacks"
            " total { gross { amount currency } } (see docs/integrations.md)"
        ),
    )


def test_the_legacy_checkout_payload_is_read_as_a_snapshot():
    body = fixture_bytes("legacy_checkout_payload_shipping_list_methods.json")

    delivery = ADAPTER.read(headers={"saleor-event": "checkout_updated"}, body=body)

    assert delivery.facts == (
        CheckoutSnapshot(
            refs=("checkout:uuid",),
            updated_at=datetime(2022, 2, 20, 21, 21, 18, 756000, tzinfo=UTC),
            currency="USD",
            lines=(),
            contact=Contact(email="linda.thomas@example.com"),
            checkout=True,
        ),
    )


def test_a_legacy_order_payload_is_placed_with_its_gross_total_and_lines():
    legacy_order = json.loads(fixture_bytes("notify_order_confirmation.json"))["payload"]["order"]
    body = json.dumps([{"type": "Order", **legacy_order}]).encode()

    (fact,) = ADAPTER.read(headers={"saleor-event": "order_created"}, body=body).facts

    assert fact == OrderPlaced(
        refs=("order:VXNlcjo1MQ==",),
        order_id="VXNlcjo1MQ==",
        total=24082,
        currency="USD",
        placed_at=datetime(2021, 3, 11, 16, 56, 59, 121991, tzinfo=UTC),
        contact=Contact(email="admin@example.com"),
        lines=(Line(sku="43226647", name="Apple Juice / 1l", quantity=11, unit_price=400),),
    )


def test_the_notify_payload_is_not_an_event_we_subscribe_to():
    body = fixture_bytes("notify_order_confirmation.json")

    delivery = ADAPTER.read(headers={"saleor-event": "notify_user"}, body=body)

    assert delivery.facts == (Ignored("event notify_user is not mapped"),)


# Bad input


def _broken(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    payload = copy.deepcopy(payload)
    target: Any = payload
    *parents, last = path.split(".")
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    target[int(last) if last.isdigit() else last] = value
    return payload


@pytest.mark.parametrize(
    ("event", "path", "value", "field"),
    [
        ("checkout_updated", "checkout", None, "checkout"),
        ("checkout_updated", "checkout", {"lines": []}, "checkout.token"),
        (
            "checkout_updated",
            "checkout.totalPrice.gross.currency",
            "EURO",
            "checkout.totalPrice.gross.currency",
        ),
        ("checkout_updated", "checkout.lines", {"a": 1}, "checkout.lines"),
        ("checkout_updated", "checkout.lines.0.quantity", 1.5, "checkout.lines.0.quantity"),
        (
            "checkout_updated",
            "checkout.lines.0.unitPrice.gross.amount",
            "NaN",
            "checkout.lines.0.unitPrice.gross.amount",
        ),
        (
            "checkout_updated",
            "checkout.lines.0.unitPrice.gross.amount",
            -1,
            "checkout.lines.0.unitPrice.gross.amount",
        ),
        (
            "checkout_updated",
            "checkout.lines.0",
            {"quantity": 1, "variant": {"sku": "X"}},
            "checkout.lines.0.unitPrice",
        ),
        ("checkout_updated", "checkout.updatedAt", "soon", "updatedAt"),
        ("order_created", "order.id", None, "order.id"),
        ("order_created", "order.total.gross.amount", 1e300, "order.total.gross.amount"),
        ("order_created", "order.total.gross", None, "order.total.gross"),
        ("order_created", "order.created", "0001-01-01T00:00:00", "created"),
    ],
)
def test_a_payload_we_cannot_read_is_a_400_naming_its_field(event, path, value, field):
    payload = checkout_event() if event.startswith("checkout") else {"order": order()}

    with pytest.raises(BadDelivery) as caught:
        read(event, _broken(payload, path, value))

    assert caught.value.status == 400
    assert list(caught.value.fields) == [field]


@pytest.mark.parametrize("body", [b"", b"{", b"null", b"[" * 100_000, b"[1, 2]", b"[]"])
def test_a_body_that_is_not_a_payload_is_a_400(body):
    with pytest.raises(BadDelivery) as caught:
        ADAPTER.read(headers={"saleor-event": "checkout_updated"}, body=body)

    assert caught.value.status == 400
    assert list(caught.value.fields) == ["body"]


def test_a_delivery_without_its_event_header_is_a_400():
    with pytest.raises(BadDelivery) as caught:
        ADAPTER.read(headers={}, body=b"{}")

    assert caught.value.status == 400
    assert list(caught.value.fields) == ["Saleor-Event"]


# Through the endpoint (integrations.inbound's pipeline)


@pytest.fixture
def shop(db, jwks):
    creds = carts_services.store_create(name="Saleor shop", domain="saleor.example")
    return services.connection_create(
        store_id=creds.store_id,
        platform="saleor",
        api_url=jwks.url.replace("/.well-known/jwks.json", "/graphql/"),
        jwks_url=jwks.url,
    )


def post(store_id: int, event: str, payload: Any, *, signature: str | None = None):
    body = payload if isinstance(payload, bytes) else json.dumps(as_sent(event, payload)).encode()
    return APIClient().post(
        f"/api/v1/webhooks/saleor/{store_id}",
        data=body,
        content_type="application/json",
        HTTP_SALEOR_EVENT=event,
        HTTP_SALEOR_DOMAIN="saleor.example",
        HTTP_SALEOR_SIGNATURE=sign(body) if signature is None else signature,
    )


CART = f"saleor-checkout-{CHECKOUT_TOKEN}"


def cart_of(store_id: int) -> dict[str, Any]:
    state = CartState.objects.get(store_id=store_id, token=CART)
    return {
        "status": state.status,
        "items": [(i["sku"], i["quantity"], i["unit_price"]) for i in state.items],
        "email": state.email,
        "order_id": state.order_id,
        "order_total": state.order_total,
        "refunded": state.refunded,
    }


def types_of(store_id: int) -> list[str]:
    events = CartEvent.objects.filter(store_id=store_id).order_by("position")
    return list(events.values_list("type", flat=True))


def checkout_at(second: int, quantity: int) -> dict[str, Any]:
    payload = checkout_event()
    payload["checkout"]["updatedAt"] = f"2026-11-01T12:00:{second:02d}+00:00"
    payload["checkout"]["lines"][0]["quantity"] = quantity
    return payload


CONVERTED = {
    "status": "converted",
    "items": [("TEA-1", 3, 1259)],  # the order's line: what was bought
    "email": "ada@example.com",
    "order_id": ORDER_ID,
    "order_total": 3777,
    "refunded": 0,
}


def test_a_checkout_updated_then_paid_converts_the_cart_once(shop):
    store_id = shop.store_id

    responses = [
        post(store_id, "checkout_created", checkout_at(1, 3)),
        post(store_id, "checkout_updated", checkout_at(2, 2)),
        post(store_id, "order_created", {"order": order()}),
        post(store_id, "order_fully_paid", {"order": order()}),
    ]

    assert [r.status_code for r in responses] == [200, 200, 200, 200]
    assert responses[0].json() == {"outcome": "recorded", "events": 3}
    assert types_of(store_id) == [
        "cart.item_added",
        "checkout.started",
        "checkout.contact_captured",
        "cart.item_quantity_changed",
        # The order's lines are what was bought: its line at its price (3 at 12.59).
        "cart.item_removed",
        "cart.item_added",
        "order.placed",
    ]
    assert cart_of(store_id) == CONVERTED


def test_deliveries_in_any_order_end_in_the_same_cart(shop):
    store_id = shop.store_id

    responses = [
        post(store_id, "order_fully_paid", {"order": order()}),
        post(store_id, "checkout_updated", checkout_at(2, 2)),
        post(store_id, "checkout_created", checkout_at(1, 3)),
    ]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert cart_of(store_id) == CONVERTED
    assert types_of(store_id).count("order.placed") == 1


def test_a_refund_is_recorded_once_whatever_the_deliveries(shop):
    refunded = order(
        transactions=[
            {
                "events": [
                    {
                        "id": "ev-2",
                        "type": "REFUND_SUCCESS",
                        "createdAt": "2026-11-02T09:00:00Z",
                        "amount": {"amount": 10, "currency": "EUR"},
                    }
                ]
            }
        ]
    )
    post(shop.store_id, "checkout_updated", checkout_at(2, 2))

    post(shop.store_id, "order_refunded", {"order": refunded})
    refunded["updatedAt"] = "2026-11-02T09:00:01+00:00"  # another body: another delivery
    post(shop.store_id, "order_refunded", {"order": refunded})

    assert cart_of(shop.store_id)["refunded"] == 1000
    assert types_of(shop.store_id).count("order.refunded") == 1


def test_a_wrong_key_is_a_401_and_nothing_is_stored(shop):
    body = json.dumps(checkout_event()).encode()

    response = post(shop.store_id, "checkout_updated", body, signature=sign(body, OTHER_KEY))

    assert response.status_code == 401
    assert response.json()["code"] == "bad_signature"
    assert InboundDelivery.objects.filter(store_id=shop.store_id).count() == 0
    assert types_of(shop.store_id) == []


def test_a_redelivery_stores_nothing_new(shop):
    first = post(shop.store_id, "checkout_updated", checkout_at(2, 2))
    again = post(shop.store_id, "checkout_updated", checkout_at(2, 2))

    assert first.json() == {"outcome": "recorded", "events": 3}
    assert again.json() == {"outcome": "duplicate", "events": 0}


def test_a_truncated_body_is_a_401_with_the_original_signature_and_a_400_signed(shop):
    body = json.dumps(checkout_event()).encode()
    cut = body[: len(body) // 2]

    unsigned = post(shop.store_id, "checkout_updated", cut, signature=sign(body))
    signed = post(shop.store_id, "checkout_updated", cut)

    assert unsigned.status_code == 401
    assert signed.status_code == 400
    assert signed.json()["body"] == ["Expected a JSON object."]
    assert InboundDelivery.objects.filter(store_id=shop.store_id).count() == 0


def test_an_unreachable_jwks_is_a_503_saleor_retries(shop, jwks):
    jwks.status = 503

    response = post(shop.store_id, "checkout_updated", checkout_event())

    assert response.status_code == 503
    assert InboundDelivery.objects.filter(store_id=shop.store_id).count() == 0
