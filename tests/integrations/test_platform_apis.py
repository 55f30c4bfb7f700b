"""The platforms' discount APIs (integrations/platforms/*_api.py) against a fake of each platform
on loopback (tests/integrations/fake_platforms.py): the exact requests, success, a code an
earlier attempt made, and every failure mapped to Transient or Permanent."""

from __future__ import annotations

import base64
import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from django.test import override_settings

from integrations.platforms import api
from integrations.platforms.api import CodeRequest, Permanent, RemoteCode, Transient, code_create
from tests.integrations import fake_platforms as fp

PLATFORMS = ["shopify", "woocommerce", "saleor"]
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 8, 12, 0, tzinfo=UTC)
# Calls that get an answer have time to spare on a loaded CI machine; a stall is cut at 0.3 s.
TIMEOUT = 5.0
STALL_TIMEOUT = 0.3


@pytest.fixture
def fake() -> Iterator[fp.FakePlatforms]:
    yield from fp.running()


def request(**changes: object) -> CodeRequest:
    values: dict = {
        "code": "BACK-7Q2XK9",
        "kind": "percent",
        "amount": 15,
        "currency": "EUR",
        "min_cart_value": 5000,
        "starts_at": T0,
        "expires_at": T1,
        "idempotency_key": "4f1c2a4e-0000-4000-8000-000000000001",
        "title": "Come back: 15 %",
        **changes,
    }
    return CodeRequest(**values)


# -- the exact requests --------------------------------------------------------------------------


@override_settings(INTEGRATIONS_SHOPIFY_API_VERSION="2025-10")
def test_shopify_gets_a_basic_code_discount_with_its_token_and_our_headers(fake):
    made = code_create(target=fake.target("shopify"), request=request(), timeout=TIMEOUT)

    assert made == RemoteCode(remote_id=fake.shopify["BACK-7Q2XK9"]["id"], existed=False)
    [call] = fake.received
    assert (call.method, call.path, call.operation) == (
        "POST",
        "/admin/api/2025-10/graphql.json",
        "create",
    )
    assert call.headers["x-shopify-access-token"] == fp.SHOPIFY_TOKEN
    assert call.headers["content-type"] == "application/json"
    assert call.headers["idempotency-key"] == "4f1c2a4e-0000-4000-8000-000000000001"
    assert call.headers["user-agent"] == api.USER_AGENT
    assert "discountCodeBasicCreate(basicCodeDiscount:" in call.body["query"]
    assert call.body["variables"] == {
        "discount": {
            "title": "Come back: 15 %",
            "code": "BACK-7Q2XK9",
            "startsAt": "2026-11-01T12:00:00+00:00",
            "endsAt": "2026-11-08T12:00:00+00:00",
            "usageLimit": 1,
            "appliesOncePerCustomer": True,
            "context": {"all": "ALL"},
            "minimumRequirement": {"subtotal": {"greaterThanOrEqualToSubtotal": "50.00"}},
            "customerGets": {"value": {"percentage": 0.15}, "items": {"all": True}},
        }
    }


def test_shopify_fixed_amount_in_major_units_of_a_zero_decimal_currency(fake):
    code_create(
        target=fake.target("shopify"),
        request=request(kind="fixed", amount=500, currency="JPY", min_cart_value=0),
        timeout=TIMEOUT,
    )

    sent = fake.received[0].body["variables"]["discount"]
    assert sent["customerGets"]["value"] == {
        "discountAmount": {"amount": "500", "appliesOnEachItem": False}
    }
    assert "minimumRequirement" not in sent


def test_shopify_free_shipping_uses_its_own_mutation(fake):
    made = code_create(
        target=fake.target("shopify"),
        request=request(kind="free_shipping", amount=0, min_cart_value=0),
        timeout=TIMEOUT,
    )

    assert fake.shopify["BACK-7Q2XK9"]["mutation"] == "discountCodeFreeShippingCreate"
    assert made.remote_id == fake.shopify["BACK-7Q2XK9"]["id"]
    sent = fake.received[0].body["variables"]["discount"]
    assert sent["destination"] == {"all": True}
    assert "customerGets" not in sent


def test_woocommerce_gets_a_coupon_with_basic_auth(fake):
    made = code_create(target=fake.target("woocommerce"), request=request(), timeout=TIMEOUT)

    assert made == RemoteCode(remote_id=str(fake.woocommerce["back-7q2xk9"]["id"]))
    [call] = fake.received
    assert (call.method, call.path) == ("POST", "/wp-json/wc/v3/coupons")
    expected = base64.b64encode(f"{fp.WOO_KEY}:{fp.WOO_SECRET}".encode()).decode()
    assert call.headers["authorization"] == f"Basic {expected}"
    assert call.headers["idempotency-key"] == "4f1c2a4e-0000-4000-8000-000000000001"
    assert call.body == {
        "code": "BACK-7Q2XK9",
        "description": "Come back: 15 %",
        "discount_type": "percent",
        "amount": "15",
        "usage_limit": 1,
        "usage_limit_per_user": 1,
        "individual_use": True,
        "date_expires_gmt": "2026-11-08T12:00:00",
        "minimum_amount": "50.00",
        "free_shipping": False,
    }


@pytest.mark.parametrize(
    ("kind", "amount", "currency", "discount_type", "sent", "free_shipping"),
    [
        ("fixed", 1250, "EUR", "fixed_cart", "12.50", False),
        ("fixed", 1234, "KWD", "fixed_cart", "1.234", False),
        ("free_shipping", 0, "EUR", "fixed_cart", "0", True),
    ],
)
def test_woocommerce_amounts_and_free_shipping(
    fake, kind, amount, currency, discount_type, sent, free_shipping
):
    code_create(
        target=fake.target("woocommerce"),
        request=request(kind=kind, amount=amount, currency=currency, min_cart_value=0),
        timeout=TIMEOUT,
    )

    body = fake.received[0].body
    assert (body["discount_type"], body["amount"], body["free_shipping"]) == (
        discount_type,
        sent,
        free_shipping,
    )
    assert "minimum_amount" not in body


def test_saleor_gets_a_voucher_then_its_channel_listing(fake):
    made = code_create(target=fake.target("saleor"), request=request(), timeout=TIMEOUT)

    voucher = fake.saleor["BACK-7Q2XK9"]
    assert made == RemoteCode(remote_id=voucher["id"], existed=False)
    assert [(c.method, c.path, c.operation) for c in fake.received] == [
        ("POST", "/graphql/", "create"),
        ("POST", "/graphql/", "listing"),
    ]
    create, listing = fake.received
    assert create.headers["authorization"] == f"Bearer {fp.SALEOR_TOKEN}"
    assert create.body["variables"] == {
        "input": {
            "name": "Come back: 15 %",
            "addCodes": ["BACK-7Q2XK9"],
            "startDate": "2026-11-01T12:00:00+00:00",
            "endDate": "2026-11-08T12:00:00+00:00",
            "usageLimit": 1,
            "singleUse": True,
            "applyOncePerCustomer": True,
            "type": "ENTIRE_ORDER",
            "discountValueType": "PERCENTAGE",
        }
    }
    assert listing.body["variables"] == {
        "id": voucher["id"],
        "input": {
            "addChannels": [
                {"channelId": fp.SALEOR_CHANNEL, "discountValue": "15", "minAmountSpent": "50.00"}
            ]
        },
    }
    assert voucher["channels"] == {
        fp.SALEOR_CHANNEL: {
            "channelId": fp.SALEOR_CHANNEL,
            "discountValue": "15",
            "minAmountSpent": "50.00",
        }
    }


def test_saleor_free_shipping_is_a_full_shipping_voucher(fake):
    code_create(
        target=fake.target("saleor"),
        request=request(kind="free_shipping", amount=0, min_cart_value=0),
        timeout=TIMEOUT,
    )

    create, listing = fake.received
    assert (
        create.body["variables"]["input"]["type"],
        create.body["variables"]["input"]["discountValueType"],
    ) == ("SHIPPING", "PERCENTAGE")
    assert listing.body["variables"]["input"]["addChannels"] == [
        {"channelId": fp.SALEOR_CHANNEL, "discountValue": "100"}
    ]


# -- a code an earlier attempt made --------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_lost_answer_then_the_retry_confirms_the_code_made_once(fake, platform):
    fake.drop_answer(platform, "create")
    target = fake.target(platform)

    with pytest.raises(Transient):
        code_create(target=target, request=request(), timeout=TIMEOUT)
    made = code_create(target=target, request=request(), timeout=TIMEOUT)

    stored = getattr(fake, platform)
    assert len(stored) == 1
    [entry] = stored.values()
    assert made == RemoteCode(remote_id=str(entry["id"]), existed=True)
    assert len(fake.calls(platform, "create")) == 2
    assert len(fake.calls(platform, "lookup")) == 1


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_code_already_on_the_platform_is_confirmed(fake, platform):
    remote_id = fake.existing(platform, "BACK-7Q2XK9")

    made = code_create(target=fake.target(platform), request=request(), timeout=TIMEOUT)

    assert made == RemoteCode(remote_id=remote_id, existed=True)
    assert [c.operation for c in fake.received] == ["create", "lookup"]


def test_saleor_voucher_made_without_its_listing_is_finished_by_the_retry(fake):
    fake.fail("saleor", "listing", status=502)
    target = fake.target("saleor")

    with pytest.raises(Transient, match="HTTP 502"):
        code_create(target=target, request=request(), timeout=TIMEOUT)
    assert fake.saleor["BACK-7Q2XK9"]["channels"] == {}
    made = code_create(target=target, request=request(), timeout=TIMEOUT)

    voucher = fake.saleor["BACK-7Q2XK9"]
    assert made == RemoteCode(remote_id=voucher["id"], existed=True)
    assert list(voucher["channels"]) == [fp.SALEOR_CHANNEL]
    assert [c.operation for c in fake.received] == [
        "create",
        "listing",
        "create",
        "lookup",
        "listing",
    ]


# -- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_429_is_transient_with_the_platforms_retry_after(fake, platform):
    fake.throttle(platform, retry_after="2")

    with pytest.raises(Transient) as raised:
        code_create(target=fake.target(platform), request=request(), timeout=TIMEOUT)

    assert raised.value.retry_after == 2.0
    assert getattr(fake, platform) == {}


def test_shopify_cost_throttle_is_transient_with_the_bucket_refill_time(fake):
    fake.throttle_graphql()

    with pytest.raises(Transient, match="throttled") as raised:
        code_create(target=fake.target("shopify"), request=request(), timeout=TIMEOUT)

    # (requested 10 - available 2) / restore rate 4 a second
    assert raised.value.retry_after == 2.0


@pytest.mark.parametrize("platform", PLATFORMS)
def test_500_is_transient(fake, platform):
    fake.fail(platform, status=500)

    with pytest.raises(Transient, match="HTTP 500") as raised:
        code_create(target=fake.target(platform), request=request(), timeout=TIMEOUT)

    assert raised.value.retry_after is None


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_stalled_platform_is_transient_within_the_timeout(fake, platform):
    fake.stall(platform, seconds=3)

    started = time.monotonic()
    with pytest.raises(Transient) as raised:
        code_create(target=fake.target(platform), request=request(), timeout=STALL_TIMEOUT)

    assert str(raised.value) == f"{platform}: no answer within 0.3 s"
    assert time.monotonic() - started < STALL_TIMEOUT + 0.4


def test_a_closed_port_is_transient():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = api.Target(
        "woocommerce",
        f"http://127.0.0.1:{port}",
        "",
        {"consumer_key": "ck_x", "consumer_secret": "cs_x"},
    )

    with pytest.raises(Transient, match="connection failed"):
        code_create(target=target, request=request(), timeout=TIMEOUT)


@pytest.mark.parametrize(
    ("platform", "wrong", "message"),
    [
        ("shopify", {"access_token": "shpat_wrong0000"}, "HTTP 401"),
        ("woocommerce", {"consumer_secret": "cs_wrong0000"}, "HTTP 401"),
        ("saleor", {"token": "wrong-token-0000"}, "MANAGE_DISCOUNTS"),
    ],
)
def test_refused_credentials_are_permanent_and_not_repeated(fake, platform, wrong, message):
    with pytest.raises(Permanent, match=message) as raised:
        code_create(target=fake.target(platform, **wrong), request=request(), timeout=TIMEOUT)

    assert next(iter(wrong.values())) not in str(raised.value)
    assert getattr(fake, platform) == {}


@pytest.mark.parametrize(
    ("platform", "message"),
    [
        ("shopify", "refused: endsAt: Ends at needs to be after starts_at"),
        ("woocommerce", "HTTP 400 rest_invalid_param: Invalid parameter(s): discount_type"),
        ("saleor", "refused: endDate: End date must be after start date"),
    ],
)
def test_a_validation_error_is_permanent_with_the_platforms_message(fake, platform, message):
    fake.refuse(platform)

    with pytest.raises(Permanent) as raised:
        code_create(target=fake.target(platform), request=request(), timeout=TIMEOUT)

    assert message in str(raised.value)
    assert getattr(fake, platform) == {}


@pytest.mark.parametrize("platform", PLATFORMS)
def test_secrets_echoed_by_a_platform_stay_out_of_errors_and_logs(fake, platform, caplog):
    target = fake.target(platform)
    secrets = [str(v) for k, v in target.credentials.items() if k != "channel_id"]
    fake.fail(platform, status=403, body=f'{{"errors": "bad credentials {secrets}"}}'.encode())
    caplog.set_level(logging.DEBUG)

    with pytest.raises(Permanent, match="HTTP 403") as raised:
        code_create(target=target, request=request(), timeout=TIMEOUT)

    for secret in secrets:
        assert secret not in str(raised.value)
        assert secret not in caplog.text
    assert "[redacted]" in str(raised.value)


@pytest.mark.parametrize(
    ("platform", "url"),
    [("woocommerce", "http://shop.example"), ("saleor", "http://shop.example/graphql/")],
)
def test_plain_http_to_a_remote_shop_is_refused_before_any_call(platform, url):
    target = api.Target(
        platform,
        url,
        "",
        {"consumer_key": "ck_1", "consumer_secret": "cs_1", "token": "t", "channel_id": "c"},
    )

    with pytest.raises(Permanent, match="https://"):
        code_create(target=target, request=request(), timeout=TIMEOUT)


@pytest.mark.parametrize("amount", [0, 101])
def test_a_percentage_out_of_range_is_permanent_before_any_call(fake, amount):
    with pytest.raises(Permanent, match=r"1\.\.100, not"):
        code_create(target=fake.target("shopify"), request=request(amount=amount), timeout=TIMEOUT)

    assert fake.received == []


# -- pure helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1250, "EUR", "12.50"),
        (5, "EUR", "0.05"),
        (500, "JPY", "500"),
        (1234, "KWD", "1.234"),
        (0, "USD", "0.00"),
        (12345678901234, "EUR", "123456789012.34"),
    ],
)
def test_major_units(amount, currency, text):
    assert api.major_units(amount, currency) == text


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        ("1.5", 1.5),
        ("Sun, 01 Nov 2026 12:00:30 GMT", 30.0),
        ("-5", 0.0),
        ("999999", 3600.0),
        ("soon", None),
        ("nan", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after(header, seconds):
    assert api.retry_after(header, now=datetime(2026, 11, 1, 12, 0, tzinfo=UTC)) == seconds


# -- the fake itself (others rely on its checks) -------------------------------------------------


def test_the_fake_flags_a_request_that_breaks_the_documented_contract(fake):
    import requests

    answer = requests.post(
        f"{fake.url}/admin/api/2025-10/graphql.json",
        headers={"X-Shopify-Access-Token": fp.SHOPIFY_TOKEN},
        json={
            "query": "mutation($d: DiscountCodeBasicInput!) "
            "{ discountCodeBasicCreate(basicCodeDiscount: $d) { userErrors { message } } }",
            "variables": {"d": {"code": "X", "usageLimit": "one"}},
        },
        timeout=2,
    )

    assert answer.status_code == 200
    assert "errors" in answer.json()
    assert fake.shopify == {}
    # graphql-core words the type error; its version decides the wording, not the finding.
    assert fake.problems[:2] == [
        "shopify: no User-Agent naming the product",
        "shopify: no Idempotency-Key",
    ]
    [type_error] = fake.problems[2:]
    assert type_error.startswith("shopify: Variable '$d'")
    assert "usageLimit" in type_error
    assert "Int cannot represent non-integer value: 'one'" in type_error
    fake.problems.clear()


def test_the_fake_serves_a_saleor_jwks_when_given_one(fake):
    import requests

    assert requests.get(fake.saleor_jwks_url, timeout=2).status_code == 404
    fake.jwks = {"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]}

    answer = requests.get(fake.saleor_jwks_url, timeout=2)

    assert (answer.status_code, answer.json()) == (200, fake.jwks)
