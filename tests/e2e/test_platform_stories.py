"""A full story per platform on a real worker: a signed checkout created and updated through the
platform's webhook endpoint, abandoned, a discount email whose code the Celery worker made on the
platform (a fake of its API on loopback) before mailing it through a real SMTP server on loopback,
then the order with that code, delivered twice and redelivered: the cart converts once, the coupon
is redeemed once, attribution counts it once, and no step runs after the order.

The campaigns' clock runs at CLOCK_SPEED in this process and the worker (campaigns/clock.py), with
an epoch past the end of the story: campaign time runs behind the server's, so a minute of
inactivity passes in a second and every touch is, in campaign time, before the order the server
records in real time (attribution compares the two)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from rest_framework.test import APIClient

from campaigns import attribution, clock, enrolment, steps
from campaigns.models import CampaignSettings, Coupon, Step
from carts.models import CartEvent, CartState, Store
from integrations import services
from integrations.models import Connection, InboundDelivery, PlatformCode
from integrations.platforms import saleor as saleor_adapter
from tests.campaigns.builders import campaign_with_tiers
from tests.e2e import procs
from tests.e2e.test_campaign_worker import _email_env, _publisher, _worker
from tests.integrations import fake_platforms as fakes
from tests.integrations.conftest import fixture_json
from tests.integrations.test_saleor import jwk
from tests.integrations.test_saleor import sign as saleor_sign
from tests.smtp_sink import SmtpSink

CLOCK_SPEED = 60.0  # a campaign minute per real second
EPOCH_AHEAD = 120.0  # real seconds from the test's start to the clock's epoch (past the story)
INACTIVITY_MINUTES = 1
SECOND_TIER_MINUTES = 24 * 60  # the later tier: due a day after the first
WEBHOOK_SECRET = "story-webhook-secret"
SHOPPER = "story.shopper@example.com"


class TimedFake(fakes.FakePlatforms):
    """The fake platforms, noting when each answer was sent (time.monotonic(), this process)."""

    def __init__(self) -> None:
        super().__init__()
        self.answered_at: list[float] = []

    def _handle(self, h: Any) -> None:
        super()._handle(h)
        self.answered_at.append(time.monotonic())


@pytest.fixture
def fake() -> Iterator[TimedFake]:
    server = TimedFake()
    try:
        yield server
    finally:
        server.close()
    assert server.problems == []


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _gmt(at: datetime) -> str:
    """WooCommerce's ``*_gmt`` form: UTC without an offset, to the second."""
    return at.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat()


def _hmac(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@dataclass
class Story:
    """One platform's side of the story: its connection, how it signs and posts a delivery, and
    the payloads of each step (``code`` is the one the email carried)."""

    platform: str
    connect: Callable[[int, TimedFake], Connection]
    post: Callable[[Connection, str, bytes, str], Any]  # (connection, topic, body, delivery id)
    created: Callable[[datetime], tuple[str, dict[str, Any]]]
    updated: Callable[[datetime], tuple[str, dict[str, Any]]]
    # The order's deliveries: (topic, payload), the first one the order as placed.
    orders: Callable[[datetime, str], list[tuple[str, dict[str, Any]]]]
    order_id: str
    order_total: int
    currency: str
    legal_basis: str  # what the store's emails may rely on (the platform's consent, or not)
    made: Callable[[TimedFake], dict[str, Any]]  # the codes the platform holds
    skus: list[str]  # the cart's after the update


# -- Shopify ---------------------------------------------------------------------------------------


def _shopify_story() -> Story:
    tag = uuid.uuid4().hex[:10]
    domain = f"story-{tag}.myshopify.com"
    checkout_token, cart_token = f"ck{tag}", f"ct{tag}"
    order_id = str(2**60 + int(tag[:8], 16))  # beyond 2**53: kept exactly
    base = fixture_json("shopify", "checkouts_create.json")
    ipod = base["line_items"][0]
    blue = {**copy.deepcopy(ipod), "sku": "IPOD2008BLUE", "variant_id": 808950811}
    blue.update(title="IPod Nano - Blue", presentment_title="IPod Nano - Blue", price="149.00")

    def connect(store_id: int, fake: TimedFake) -> Connection:
        return services.connection_create(
            store_id=store_id,
            platform="shopify",
            shop_domain=domain,
            api_url=fake.url,
            webhook_secret=WEBHOOK_SECRET,
            credentials={"access_token": fakes.SHOPIFY_TOKEN},
        )

    def post(connection: Connection, topic: str, body: bytes, delivery: str) -> Any:
        return APIClient().post(
            "/api/v1/webhooks/shopify",
            data=body,
            content_type="application/json",
            HTTP_X_SHOPIFY_TOPIC=topic,
            HTTP_X_SHOPIFY_SHOP_DOMAIN=domain,
            HTTP_X_SHOPIFY_WEBHOOK_ID=delivery,
            HTTP_X_SHOPIFY_API_VERSION="2025-10",
            HTTP_X_SHOPIFY_HMAC_SHA256=_hmac(body),
        )

    def checkout(at: datetime, lines: list[dict[str, Any]]) -> dict[str, Any]:
        payload = copy.deepcopy(base)
        payload.update(
            token=checkout_token,
            cart_token=cart_token,
            email=SHOPPER,
            buyer_accepts_marketing=True,
            created_at=_iso(at),
            updated_at=_iso(at),
            line_items=lines,
            abandoned_checkout_url=(
                f"https://{domain}/548380009/checkouts/{checkout_token}/recover?key=k{tag}"
            ),
        )
        payload["customer"] = {**payload["customer"], "email": SHOPPER}
        return payload

    def orders(at: datetime, code: str) -> list[tuple[str, dict[str, Any]]]:
        order = fixture_json("shopify", "orders_create.json")
        total = {"amount": "313.20", "currency_code": "USD"}
        order.update(
            id=int(order_id),
            admin_graphql_api_id=f"gid://shopify/Order/{order_id}",
            cart_token=cart_token,
            checkout_token=checkout_token,
            email=SHOPPER,
            contact_email=SHOPPER,
            buyer_accepts_marketing=True,
            cancel_reason=None,
            cancelled_at=None,
            financial_status="paid",
            created_at=_iso(at),
            processed_at=_iso(at),
            updated_at=_iso(at),
            currency="USD",
            presentment_currency="USD",
            total_price="313.20",
            total_price_set={"shop_money": total, "presentment_money": total},
            discount_codes=[{"code": code, "amount": "34.80", "type": "percentage"}],
            line_items=[ipod, blue],  # what the checkout held
        )
        paid = {**order, "updated_at": _iso(at + timedelta(seconds=1))}
        return [("orders/create", order), ("orders/paid", paid)]

    return Story(
        platform="shopify",
        connect=connect,
        post=post,
        created=lambda at: ("checkouts/create", checkout(at, [ipod])),
        updated=lambda at: ("checkouts/update", checkout(at, [ipod, blue])),
        orders=orders,
        order_id=order_id,
        order_total=31320,
        currency="USD",
        legal_basis=CampaignSettings.LegalBasis.CONSENT,
        made=lambda fake: {code: entry["input"] for code, entry in fake.shopify.items()},
        skus=["IPOD2008PINK", "IPOD2008BLUE"],
    )


# -- WooCommerce -----------------------------------------------------------------------------------


def _woocommerce_story() -> Story:
    order_id = str(700_000 + uuid.uuid4().int % 100_000)
    base = fixture_json("woocommerce", "order_created.json")
    single, shirt = base["line_items"]

    def connect(store_id: int, fake: TimedFake) -> Connection:
        return services.connection_create(
            store_id=store_id,
            platform="woocommerce",
            api_url=fake.url,
            storefront_url="https://woo.story.example",
            webhook_secret=WEBHOOK_SECRET,
            credentials={"consumer_key": fakes.WOO_KEY, "consumer_secret": fakes.WOO_SECRET},
        )

    def post(connection: Connection, topic: str, body: bytes, delivery: str) -> Any:
        return APIClient().post(
            f"/api/v1/webhooks/woocommerce/{connection.store_id}",
            data=body,
            content_type="application/json",
            HTTP_X_WC_WEBHOOK_SIGNATURE=_hmac(body),
            HTTP_X_WC_WEBHOOK_TOPIC=topic,
            HTTP_X_WC_WEBHOOK_RESOURCE="order",
            HTTP_X_WC_WEBHOOK_EVENT=topic.split(".")[1],
            HTTP_X_WC_WEBHOOK_DELIVERY_ID=delivery,
        )

    def order(at: datetime, status: str, lines: list[dict[str, Any]], **more: Any) -> dict:
        payload = copy.deepcopy(base)
        payload.update(
            {
                "id": int(order_id),
                "number": order_id,
                "status": status,
                "date_created_gmt": _gmt(at),
                "date_modified_gmt": _gmt(at),
                "date_paid_gmt": None,
                "date_paid": None,
                "line_items": lines,
                **more,
            }
        )
        payload["billing"] = {**payload["billing"], "email": SHOPPER}
        return payload

    def orders(at: datetime, code: str) -> list[tuple[str, dict[str, Any]]]:
        paid = order(
            at,
            "processing",
            [single, shirt],
            date_paid_gmt=_gmt(at),
            total="26.65",
            discount_total="2.70",
            coupon_lines=[{"id": 401, "code": code.lower(), "discount": "2.70"}],
        )
        completed = {
            **paid,
            "status": "completed",
            "date_modified_gmt": _gmt(at + timedelta(seconds=1)),
        }
        return [("order.updated", paid), ("order.updated", completed)]

    return Story(
        platform="woocommerce",
        connect=connect,
        post=post,
        created=lambda at: ("order.created", order(at, "pending", [single])),
        updated=lambda at: ("order.updated", order(at, "pending", [single, shirt])),
        orders=orders,
        order_id=order_id,
        order_total=2665,
        currency="USD",
        # WooCommerce's orders carry no marketing consent: only a store emailing on legitimate
        # interest reaches its shoppers (docs/integrations.md).
        legal_basis=CampaignSettings.LegalBasis.LEGITIMATE_INTEREST,
        made=lambda fake: {code.upper(): coupon for code, coupon in fake.woocommerce.items()},
        skus=["product:93", "Bar3"],
    )


# -- Saleor ----------------------------------------------------------------------------------------


def _saleor_story() -> Story:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = f"story-{uuid.uuid4().hex[:6]}"
    token = str(uuid.uuid4())
    checkout_id = base64.b64encode(f"Checkout:{token}".encode()).decode()
    order_gid = base64.b64encode(f"Order:{uuid.uuid4()}".encode()).decode()

    def money(amount: float) -> dict[str, Any]:
        return {"gross": {"amount": amount, "currency": "EUR"}}

    def line(sku: str, name: str, quantity: int, price: float) -> dict[str, Any]:
        return {
            "quantity": quantity,
            "variant": {
                "id": base64.b64encode(f"ProductVariant:{sku}".encode()).decode(),
                "sku": sku,
                "name": "250 g",
                "product": {"name": name},
            },
            "unitPrice": money(price),
            "totalPrice": money(round(price * quantity, 2)),
        }

    tea, coffee = line("TEA-1", "Green tea", 2, 13.99), line("COFFEE-1", "Coffee", 1, 9.50)

    def connect(store_id: int, fake: TimedFake) -> Connection:
        fake.jwks = {"keys": [jwk(key, kid)]}
        saleor_adapter.JWKS.clear()
        return services.connection_create(
            store_id=store_id,
            platform="saleor",
            api_url=fake.url + fakes.SALEOR_PATH,
            jwks_url=fake.saleor_jwks_url,
            storefront_url="https://saleor.story.example",
            credentials={"token": fakes.SALEOR_TOKEN, "channel_id": fakes.SALEOR_CHANNEL},
        )

    def post(connection: Connection, topic: str, body: bytes, delivery: str) -> Any:
        # Saleor sends no delivery id: a redelivery is the same event with the same body.
        return APIClient().post(
            f"/api/v1/webhooks/saleor/{connection.store_id}",
            data=body,
            content_type="application/json",
            HTTP_SALEOR_EVENT=topic,
            HTTP_SALEOR_DOMAIN="saleor.story.example",
            HTTP_SALEOR_SIGNATURE=saleor_sign(body, key, kid),
        )

    def checkout(event: str, at: datetime, lines: list[dict[str, Any]]) -> tuple[str, dict]:
        total = round(sum(li["totalPrice"]["gross"]["amount"] for li in lines), 2)
        return event, {
            "__typename": "CheckoutUpdated" if event == "checkout_updated" else "CheckoutCreated",
            "issuedAt": _iso(at),
            "checkout": {
                "id": checkout_id,
                "token": token,
                "updatedAt": _iso(at),
                "email": SHOPPER,
                "user": None,
                "voucherCode": None,
                "totalPrice": money(total),
                "lines": lines,
            },
        }

    def orders(at: datetime, code: str) -> list[tuple[str, dict[str, Any]]]:
        order = {
            "id": order_gid,
            "number": "1042",
            "checkoutId": checkout_id,
            "created": _iso(at),
            "updatedAt": _iso(at),
            "userEmail": SHOPPER,
            "voucherCode": code,
            "total": money(33.13),
            "totalRefunded": {"amount": 0.0, "currency": "EUR"},
            "lines": [
                {
                    "productSku": li["variant"]["sku"],
                    "productVariantId": li["variant"]["id"],
                    "productName": li["variant"]["product"]["name"],
                    "variantName": "250 g",
                    "quantity": li["quantity"],
                    "unitPrice": li["unitPrice"],
                }
                for li in (tea, coffee)
            ],
            "transactions": [],
            "payments": [],
        }
        paid = {**order, "updatedAt": _iso(at + timedelta(seconds=1))}
        return [("order_created", {"order": order}), ("order_fully_paid", {"order": paid})]

    return Story(
        platform="saleor",
        connect=connect,
        post=post,
        created=lambda at: checkout("checkout_created", at, [tea]),
        updated=lambda at: checkout("checkout_updated", at, [tea, coffee]),
        orders=orders,
        order_id=order_gid,
        order_total=3313,
        currency="EUR",
        # Saleor's checkouts carry no marketing consent either.
        legal_basis=CampaignSettings.LegalBasis.LEGITIMATE_INTEREST,
        made=lambda fake: {code: entry["input"] for code, entry in fake.saleor.items()},
        skus=["TEA-1", "COFFEE-1"],
    )


STORIES = {
    "shopify": _shopify_story,
    "woocommerce": _woocommerce_story,
    "saleor": _saleor_story,
}


# -- the story -------------------------------------------------------------------------------------


def _deliver(story: Story, connection: Connection, topic: str, payload: Any, delivery: str) -> Any:
    body = json.dumps(payload).encode()
    return story.post(connection, topic, body, delivery)


def _store_steps(store: Store) -> list[tuple[int, str, str, str]]:
    return [
        (s.tier.position, s.channel, s.status, s.reason)
        for s in Step.objects.filter(store=store).select_related("tier").order_by("tier__position")
    ]


@pytest.mark.parametrize("platform", list(STORIES))
def test_a_checkout_abandoned_on_the_platform_is_recovered_once_with_the_code_it_made(
    platform, committed_store, isolated_redis, tmp_path, settings, fake
):
    store, _ = committed_store
    story = STORIES[platform]()
    settings.CAMPAIGNS_CLOCK_SPEED = CLOCK_SPEED
    settings.CAMPAIGNS_CLOCK_EPOCH = time.time() + EPOCH_AHEAD
    settings.CAMPAIGNS_PUBLIC_URL = "http://testserver"
    campaign = campaign_with_tiers(
        store.pk,
        activated_at=clock.now() - timedelta(hours=1),
        inactivity_minutes=INACTIVITY_MINUTES,
        tiers=[
            {
                "channel": "discount",
                "delay_minutes": 0,
                "offer_kind": "percent_discount",
                "discount_min": 10,
                "discount_max": 10,
                "discount_cap": 100_000,
                "subject_template": "A code for your cart",
            },
            {
                "channel": "email",
                "delay_minutes": SECOND_TIER_MINUTES,
                "subject_template": "Last call",
            },
        ],
    )
    CampaignSettings.objects.filter(store=store).update(email_legal_basis=story.legal_basis)
    connection = story.connect(store.pk, fake)

    # Checkout created (with the shopper's address), then updated with one item more.
    now = datetime.now(UTC)
    created = _deliver(story, connection, *story.created(now - timedelta(seconds=20)), "d-created")
    updated = _deliver(story, connection, *story.updated(now - timedelta(seconds=10)), "d-updated")
    assert (created.status_code, updated.status_code) == (200, 200), (
        created.content,
        updated.content,
    )
    assert (created.json()["outcome"], updated.json()["outcome"]) == ("recorded", "recorded")
    [cart] = set(InboundDelivery.objects.filter(store_id=store.pk).values_list("cart", flat=True))
    state = CartState.objects.get(store_id=store.pk, token=cart)
    assert (state.status, [i["sku"] for i in state.items], state.email) == (
        "checkout",
        story.skus,
        SHOPPER,
    )

    # Time passes: the cart is abandoned by the server's clock (seen_at), sped up.
    assert state.seen_at is not None
    abandoned = clock.at(state.seen_at) + timedelta(minutes=INACTIVITY_MINUTES)
    procs.wait_for(lambda: clock.now() >= abandoned, timeout=10, interval=0.05, what="idleness")
    later = abandoned + timedelta(minutes=5)
    assert enrolment.abandoned_carts_enroll(now=later) == 1

    app, publish = _publisher(isolated_redis)
    with SmtpSink() as sink:
        env = _email_env(
            sink,
            CAMPAIGNS_CLOCK_SPEED=repr(CLOCK_SPEED),
            CAMPAIGNS_CLOCK_EPOCH=repr(settings.CAMPAIGNS_CLOCK_EPOCH),
        )
        worker = _worker(tmp_path, env, f"story-{platform}")
        try:
            assert steps.due_steps_enqueue(now=later, publish=publish) == 1
            [email] = sink.wait_for(1, timeout=30)
            procs.wait_for(
                lambda: Step.objects.filter(store=store, status="sent").exists(),
                timeout=30,
                what="the discount step recorded as sent",
            )
            coupon = Coupon.objects.get(store=store)

            # The order with that code: placed, then a second order webhook for the same order,
            # then a redelivery of the first.
            ordered_at = datetime.now(UTC)
            deliveries = story.orders(ordered_at, coupon.code)
            answers = [
                _deliver(story, connection, topic, payload, f"d-order-{n}")
                for n, (topic, payload) in enumerate(deliveries)
            ]
            first_topic, first_payload = deliveries[0]
            again = _deliver(story, connection, first_topic, first_payload, "d-order-0")

            # No step runs after the order: a day (and more) later, nothing of this store.
            handed: list[list[int]] = []
            much_later = later + timedelta(minutes=SECOND_TIER_MINUTES, days=2)
            steps.due_steps_enqueue(now=much_later, publish=handed.append)
            time.sleep(0.5)  # anything handed to the worker by mistake has had time to send
        finally:
            procs.stop(worker)
            app.close()
        received = list(sink.received)

    # The email: one, to the shopper, carrying the code, which the platform had made (its every
    # call answered) before the message arrived.
    assert [r.rcpt_tos for r in received] == [(SHOPPER,)]
    assert email.message["Subject"] == "A code for your cart"
    body = email.message.get_body(preferencelist=("plain",))
    assert body is not None and coupon.code in body.get_content()
    assert list(story.made(fake)) == [coupon.code]
    assert len(fake.calls(platform, "create")) == 1
    assert max(fake.answered_at) < email.arrived_at
    code = PlatformCode.objects.get(coupon=coupon)
    assert (code.state, code.connection_id, code.attempts) == ("confirmed", connection.pk, 1)

    # The order: placed by its first delivery, nothing new from the second order webhook, and the
    # redelivery a duplicate.
    assert [(a.status_code, a.json()) for a in answers] == [
        (200, {"outcome": "recorded", "events": 1}),
        (200, {"outcome": "recorded", "events": 0}),
    ]
    assert (again.status_code, again.json()) == (200, {"outcome": "duplicate", "events": 0})

    # The cart converts once.
    events = CartEvent.objects.filter(store_id=store.pk, cart=cart)
    placed = [e.data for e in events.filter(type="order.placed")]
    assert placed == [
        {
            "order_id": story.order_id,
            "total": story.order_total,
            "currency": story.currency,
            "coupon": placed[0]["coupon"],
        }
    ]
    assert placed[0]["coupon"].upper() == coupon.code
    state.refresh_from_db()
    assert (state.status, state.order_id, state.order_total) == (
        "converted",
        story.order_id,
        story.order_total,
    )

    # The coupon is redeemed once, by that order.
    coupon.refresh_from_db()
    assert coupon.redeemed_at is not None
    assert coupon.order_id == story.order_id
    redeemed = CartEvent.objects.filter(store_id=store.pk, type="campaign.coupon_redeemed")
    assert [(e.cart, e.data["code"], e.data["order_id"]) for e in redeemed] == [
        (cart, coupon.code, story.order_id)
    ]

    # Attribution counts it once, with the order's total.
    day = timedelta(days=1)
    summary = attribution.attribution_summary(
        store_id=store.pk, start=ordered_at - day, end=ordered_at + day, campaign_id=campaign.pk
    )
    discount = coupon.discount_applied or 0
    assert summary.recovered_carts == 1
    assert summary.revenue == (
        attribution.RevenueByCurrency(
            currency=story.currency,
            orders=1,
            gross=story.order_total,
            discounts=discount,
            refunds=0,
            net=story.order_total - discount,
        ),
    )
    assert [(c.channel, c.carts) for c in summary.recovered_by_channel] == [("discount", 1)]

    # No step runs after the order: the later tier was cancelled by it, and nothing of this store
    # was handed out again.
    assert _store_steps(store) == [
        (1, "discount", "sent", "eligible"),
        (2, "email", "cancelled", "converted"),
    ]
    ours = set(Step.objects.filter(store=store).values_list("pk", flat=True))
    assert ours.isdisjoint(i for batch in handed for i in batch)
    assert (
        CartEvent.objects.filter(store_id=store.pk, cart=cart, type="campaign.step_sent").count()
        == 1
    )
