"""Tenant isolation, as a matrix (issue 13): on every surface, what store A holds (its secret and
publishable keys, session tickets, browser grants, marketers, merchants, the links in its emails)
neither reads nor changes anything of store B.

Two stores built alike through the services: allowed origin, a cart the shop's server made (items,
the contact of one shopper who buys from both stores, an email step, a coupon, a pending on-site
offer) and a cart the browser minted (a pending offer). Each case asks for A's own data with A's
credentials first (the control: the surface answers them, so a refusal means something), then for
B's, and compares every row of B (log, carts, campaigns, tiers, steps, coupons, suppressions,
pending offers) before and after. The websocket cases commit (consumers run in a thread pool), so
they build stores of their own and scope every assertion to them.

Each store is also connected to its shop platforms (integrations/): a Shopify and a WooCommerce
connection, each with a webhook secret of its own, a checkout its Shopify delivered (signed), an
outbound webhook endpoint with one delivery, and its coupon made on Shopify. A's secret key reaches
none of B's endpoints, a platform delivery signed with A's secret reaches nothing of B whatever shop
or store it names, and the integrations' admins are scoped like the campaigns' ones.

The carts and recovery admins (stores, members, log, cart states, dead letters, scoring models) are
not scoped per store: they are for superusers (or staff given Django model permissions) only, and a
merchant gets 403 there; the campaigns and integrations admins are scoped by merchant membership.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns import coupons, links
from campaigns.admin import StoreScopedAdmin
from campaigns.models import (
    Campaign,
    CampaignSettings,
    Coupon,
    Enrollment,
    Step,
    Suppression,
    Tier,
)
from carts import grants, identity, projectors, services
from carts.models import CartEvent, CartState, ShopperKey, Store, StoreKey, StoreMember
from carts.sources import Source
from config.asgi import application
from dashboards import views as dashboard_views
from integrations import outbound as integrations_outbound
from integrations import services as integrations_services
from integrations.models import (
    Connection,
    Endpoint,
    InboundDelivery,
    OutboundAttempt,
    OutboundDelivery,
    Platform,
    PlatformCart,
    PlatformCode,
    PlatformRef,
)
from recovery import cart_tokens, live, tickets
from tests.conftest import item, new_event
from tests.integrations.conftest import fixture_json

SHOPPER_EMAIL = "same.shopper@example.com"  # a customer of both stores
WEBHOOK_SECRET = "operator-hook:Zq8wLx2vN4"  # the operator's (anymail), not any store's
HOUR = timedelta(hours=1)
METRICS = ("overview", "timeseries", "funnel", "offers", "scores", "products")


@pytest.fixture(autouse=True)
def _no_rate_limits_and_fresh_tiers(settings):
    # The matrix sends more requests from one address than the public limits allow a minute;
    # the limits have tests of their own (tests/carts/test_ratelimits.py).
    settings.RATE_LIMITS = {name: "" for name in settings.RATE_LIMITS}
    settings.RECOVERY_CAMPAIGN_REFRESH_SECONDS = 0
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": [WEBHOOK_SECRET]}
    live.onsite_tiers_forget()


# Two stores ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Platforms:
    """The store's shop platforms, each signing with a secret of its own."""

    shopify: Connection
    shopify_secret: str
    woocommerce: Connection
    woocommerce_secret: str
    cart_token: str  # Shopify's, of the checkout delivered
    checkout_token: str
    inbound: InboundDelivery  # a checkout its Shopify delivered
    endpoint: Endpoint
    outbound: OutboundDelivery  # one delivery to the endpoint, with one attempt
    code: PlatformCode  # the coupon, made on Shopify


@dataclass(frozen=True)
class Shop:
    label: str
    store: Store
    creds: services.StoreCredentials
    origin: str
    server_cart: str  # made by the shop's server: contact, email step, coupon, pending offer
    browser_cart: str  # minted for the store's browser: a pending offer
    server_offer: str
    browser_offer: str
    campaign: Campaign
    step: Step
    coupon: Coupon
    suppression: Suppression
    marketer: User
    merchant: User
    connected: Platforms | None  # None for the committed (websocket) shops: see shop_build

    @property
    def platforms(self) -> Platforms:
        assert self.connected is not None
        return self.connected

    @property
    def markers(self) -> list[str]:
        """Strings that belong to this store alone: none may appear in an answer to the other."""
        platforms = [] if self.connected is None else [
            self.connected.shopify.shop_domain,
            self.connected.inbound.delivery_id,
            self.connected.inbound.cart,
            self.connected.endpoint.url,
            self.connected.outbound.webhook_id,
            self.connected.code.remote_id,
        ]  # fmt: skip
        return [
            self.store.name,
            self.server_cart,
            self.browser_cart,
            self.server_offer,
            self.browser_offer,
            self.coupon.code,
            self.campaign.name,
            self.suppression.shopper,
            *platforms,
        ]


def _browser_event(type: str, data: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": type, "occurred_at": now.isoformat(), "data": data}


def _offer_made(store_id: int, cart: str, now: datetime) -> str:
    """An item and an exit intent through the shopper channel's service: the offer's id."""
    live.shopper_event_append(
        store_id=store_id,
        cart=cart,
        raw=_browser_event("cart.item_added", item(unit_price=5000), now),
        now=now,
        session="isolation",
    )
    outcome = live.shopper_event_append(
        store_id=store_id,
        cart=cart,
        raw=_browser_event("shopper.exit_intent", {"trigger": "mouse_leave"}, now),
        now=now,
        session="isolation",
    )
    assert outcome.decision is not None and outcome.decision.offer is not None
    return str(outcome.decision.offer["id"])


def shopify_signed(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify_checkout(cart_token: str, checkout_token: str) -> bytes:
    """Shopify's sample checkouts/create, for this checkout and cart."""
    body = fixture_json("shopify", "checkouts_create.json")
    body.update(token=checkout_token, cart_token=cart_token)
    return json.dumps(body).encode()


# One client for the platforms' deliveries (they carry no cookies): a new client loads the
# middleware again, and WhiteNoise's scan of the static files is half of a delivery's time.
PLATFORM = APIClient()


def post_shopify(body: bytes, *, secret: str, domain: str, webhook_id: str) -> Any:
    return PLATFORM.post(
        "/api/v1/webhooks/shopify",
        data=body,
        content_type="application/json",
        HTTP_X_SHOPIFY_TOPIC="checkouts/create",
        HTTP_X_SHOPIFY_SHOP_DOMAIN=domain,
        HTTP_X_SHOPIFY_WEBHOOK_ID=webhook_id,
        HTTP_X_SHOPIFY_API_VERSION="2025-01",
        HTTP_X_SHOPIFY_HMAC_SHA256=shopify_signed(body, secret),
    )


def post_woocommerce(store_id: int, body: bytes, *, secret: str, delivery: str) -> Any:
    return PLATFORM.post(
        f"/api/v1/webhooks/woocommerce/{store_id}",
        data=body,
        content_type="application/json",
        HTTP_X_WC_WEBHOOK_SIGNATURE=shopify_signed(body, secret),  # the same scheme
        HTTP_X_WC_WEBHOOK_TOPIC="order.created",
        HTTP_X_WC_WEBHOOK_DELIVERY_ID=delivery,
        HTTP_X_WC_WEBHOOK_RESOURCE="order",
    )


def _platforms_connect(store: Store, coupon: Coupon, label: str, suffix: str) -> Platforms:
    """Connections made through the services, a checkout delivered through the Shopify endpoint
    (signed with the shop's secret), an endpoint with one delivery and its attempt, and the
    coupon's code as the platform confirmed it."""
    now = timezone.now()
    shopify_secret, woocommerce_secret = f"shpss_{label}_{suffix}", f"wc_{label}_{suffix}"
    shopify = integrations_services.connection_create(
        store_id=store.pk,
        platform=Platform.SHOPIFY,
        shop_domain=f"{label}-{suffix}.myshopify.com",
        webhook_secret=shopify_secret,
    )
    woocommerce = integrations_services.connection_create(
        store_id=store.pk,
        platform=Platform.WOOCOMMERCE,
        api_url=f"https://{label}-{suffix}.example",
        webhook_secret=woocommerce_secret,
    )
    cart_token, checkout_token = f"cart{label}{suffix}", f"checkout{label}{suffix}"
    delivered = post_shopify(
        shopify_checkout(cart_token, checkout_token),
        secret=shopify_secret,
        domain=shopify.shop_domain,
        webhook_id=f"shopify-delivery-{label}-{suffix}",
    )
    assert delivered.json() == {"outcome": "recorded", "events": 3}, delivered.content
    endpoint = integrations_outbound.endpoint_create(
        store_id=store.pk, url=f"https://hooks-{label}-{suffix}.example/cart-recovery"
    )
    sent = OutboundDelivery.objects.create(
        endpoint=endpoint,
        store=store,
        webhook_id=f"msg_{label}{suffix}",
        event_type="cart.abandoned",
        position=1,
        payload={"type": "cart.abandoned", "timestamp": now.isoformat(), "data": {}},
        status=OutboundDelivery.Status.DELIVERED,
        attempts=1,
        next_attempt_at=now,
        finished_at=now,
    )
    OutboundAttempt.objects.create(delivery=sent, at=now, status_code=200, duration_ms=12)
    code = PlatformCode.objects.create(
        coupon=coupon,
        connection=shopify,
        state=PlatformCode.State.CONFIRMED,
        remote_id=f"gid://shopify/DiscountCodeNode/{label}{suffix}",
        attempts=1,
        confirmed_at=now,
    )
    return Platforms(
        shopify=shopify,
        shopify_secret=shopify_secret,
        woocommerce=woocommerce,
        woocommerce_secret=woocommerce_secret,
        cart_token=cart_token,
        checkout_token=checkout_token,
        inbound=InboundDelivery.objects.get(store=store),
        endpoint=endpoint,
        outbound=sent,
        code=code,
    )


def shop_build(label: str, *, platforms: bool = True) -> Shop:
    """``platforms=False`` for committed shops: their active connections and endpoints would stay
    behind for other tests' health checks and outbound senders."""
    suffix = uuid.uuid4().hex[:8]
    now = timezone.now()
    creds = services.store_create(name=f"Shop {label} {suffix}", domain=f"{label}.example")
    store = Store.objects.get(pk=creds.store_id)
    origin = f"https://{label}-{suffix}.example"
    services.store_origins_add(store=store, origins=[origin])
    campaign = Campaign.objects.create(
        store=store,
        name=f"Win back {label} {suffix}",
        active=True,
        activated_at=now - timedelta(days=1),
        holdout_share=0,
        quiet_start=None,
        quiet_end=None,
    )
    Tier.objects.create(
        campaign=campaign,
        position=1,
        channel=Tier.Channel.ONSITE,
        min_score=0.0,
        min_cart_value=1,
        offer_kind=Tier.OfferKind.PERCENT_DISCOUNT,
        percent=10,
        discount_cap=2000,
    )
    email_tier = Tier.objects.create(
        campaign=campaign, position=2, channel=Tier.Channel.EMAIL, min_score=0.0, delay_minutes=60
    )
    discount_tier = Tier.objects.create(
        campaign=campaign,
        position=3,
        channel=Tier.Channel.DISCOUNT,
        offer_kind=Tier.OfferKind.PERCENT_DISCOUNT,
        discount_min=5,
        discount_max=20,
        min_score=0.0,
        delay_minutes=1440,
    )
    CampaignSettings.objects.create(
        store=store,
        email_from=f"Shop {label} <shop@{label}.example>",
        cart_url=f"https://{label}.example/cart",
    )

    server_cart = f"srv-{label}-{suffix}"
    services.events_append(
        store_id=store.pk,
        events=[
            new_event("cart.item_added", server_cart, item(unit_price=6000), at=now - 2 * HOUR),
            new_event(
                "checkout.contact_captured",
                server_cart,
                {"email": SHOPPER_EMAIL, "consent": {"email": True}},
                at=now - HOUR,
            ),
        ],
        source=Source.server("isolation"),
    )
    server_offer = _offer_made(store.pk, server_cart, now)
    browser_cart = cart_tokens.cart_token_mint(store_id=store.pk)
    browser_offer = _offer_made(store.pk, browser_cart, now)

    state = CartState.objects.get(store=store, token=server_cart)
    shopper = identity.cart_shopper_key(shopper_id=state.shopper_id, email=state.email) or ""
    enrollment = Enrollment.objects.create(
        store=store,
        cart=server_cart,
        campaign=campaign,
        shopper=shopper,
        cart_value=state.value,
        currency=state.currency,
        abandoned_at=now - HOUR / 2,
    )
    step = Step.objects.create(
        store=store,
        cart=server_cart,
        enrollment=enrollment,
        tier=email_tier,
        channel=email_tier.channel,
        shopper=shopper,
        due_at=now + HOUR,
        status=Step.Status.PENDING,
    )
    with transaction.atomic():
        issued = coupons.coupon_issue(
            store_id=store.pk,
            cart=server_cart,
            shopper=shopper,
            step_id=None,
            tier=discount_tier,
            cart_value=state.value,
            currency=state.currency,
            score=0.8,
            price_sensitivity=0.5,
            gross_margin_percent=40,
            now=now,
        )
        # As the campaigns do (the exit intent above may have issued the cart's code already: the
        # same coupon and the very same event, a duplicate).
        services.events_append(
            store_id=store.pk, events=[issued.event], source=Source.system("campaigns")
        )
    assert issued.coupon is not None
    suppression = Suppression.objects.create(
        store=store,
        shopper=f"id:unsubscribed-{label}-{suffix}",
        kind="unsubscribed",
        created_at=now,
    )
    # Paused once its offers are made: committed rows stay behind, and an active campaign would be
    # enrolled by other tests' schedulers.
    Campaign.objects.filter(pk=campaign.pk).update(active=False)
    live.onsite_tiers_forget()

    marketer = User.objects.create_user(username=f"marketer-{label}-{suffix}", password="pw-1")
    StoreMember.objects.create(store=store, user=marketer, role=StoreMember.Role.MARKETER)
    merchant = User.objects.create_user(
        username=f"merchant-{label}-{suffix}", password="pw-1", is_staff=True
    )
    StoreMember.objects.create(store=store, user=merchant, role=StoreMember.Role.MERCHANT)
    connected = _platforms_connect(store, issued.coupon, label, suffix) if platforms else None
    return Shop(
        label=label,
        store=store,
        creds=creds,
        origin=origin,
        server_cart=server_cart,
        browser_cart=browser_cart,
        server_offer=server_offer,
        browser_offer=browser_offer,
        campaign=Campaign.objects.get(pk=campaign.pk),
        step=step,
        coupon=issued.coupon,
        suppression=suppression,
        marketer=marketer,
        merchant=merchant,
        connected=connected,
    )


def rows_of(shop: Shop) -> dict[str, Any]:
    """Everything of the store that a request could change, and its pending offers (Redis)."""
    store_id = shop.store.pk
    now = timezone.now()
    return {
        "store": list(Store.objects.filter(pk=store_id).values()),
        "keys": list(StoreKey.objects.filter(store_id=store_id).order_by("pk").values()),
        "members": list(StoreMember.objects.filter(store_id=store_id).order_by("pk").values()),
        "events": list(
            CartEvent.objects.filter(store_id=store_id)
            .order_by("position")
            .values_list("position", "cart", "version", "type", "data")
        ),
        "carts": list(CartState.objects.filter(store_id=store_id).order_by("token").values()),
        "campaigns": list(Campaign.objects.filter(store_id=store_id).order_by("pk").values()),
        "tiers": list(Tier.objects.filter(campaign__store_id=store_id).order_by("pk").values()),
        "settings": list(CampaignSettings.objects.filter(store_id=store_id).values()),
        "enrollments": list(Enrollment.objects.filter(store_id=store_id).order_by("pk").values()),
        "steps": list(Step.objects.filter(store_id=store_id).order_by("pk").values()),
        "coupons": list(Coupon.objects.filter(store_id=store_id).order_by("pk").values()),
        "suppressions": list(Suppression.objects.filter(store_id=store_id).order_by("pk").values()),
        "connections": list(Connection.objects.filter(store_id=store_id).order_by("pk").values()),
        "inbound": list(InboundDelivery.objects.filter(store_id=store_id).order_by("pk").values()),
        "platform_refs": list(
            PlatformRef.objects.filter(store_id=store_id).order_by("pk").values()
        ),
        "platform_carts": list(
            PlatformCart.objects.filter(store_id=store_id).order_by("pk").values()
        ),
        "platform_codes": list(
            PlatformCode.objects.filter(coupon__store_id=store_id).order_by("pk").values()
        ),
        "endpoints": list(Endpoint.objects.filter(store_id=store_id).order_by("pk").values()),
        "outbound": list(
            OutboundDelivery.objects.filter(store_id=store_id).order_by("pk").values()
        ),
        "attempts": list(
            OutboundAttempt.objects.filter(delivery__store_id=store_id).order_by("pk").values()
        ),
        "pending": {
            cart: [o["id"] for o in live.pending_offers(store_id=store_id, cart=cart, now=now)]
            for cart in (shop.server_cart, shop.browser_cart)
        },
    }


def leaked(body: bytes | str, shop: Shop) -> list[str]:
    text = body.decode() if isinstance(body, bytes) else body
    return [marker for marker in shop.markers if marker in text]


@pytest.fixture
def shops(db) -> tuple[Shop, Shop]:
    a, b = shop_build("a"), shop_build("b")
    assert rows_of(b)["pending"] == {
        b.server_cart: [b.server_offer],
        b.browser_cart: [b.browser_offer],
    }
    return a, b


def secret_key_client(shop: Shop) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {shop.creds.secret_key}")
    return client


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


# Every route is in the matrix ------------------------------------------------------------------


def _routes(patterns: list[Any] | None = None, prefix: str = "") -> list[str]:
    out: list[str] = []
    for p in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(p, URLResolver):
            if prefix + str(p.pattern) == "admin/":
                out.append("admin/")  # the admin's own routes: the admin section below
                continue
            out += _routes(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            out.append(prefix + str(p.pattern))
    return out


# Where each route's isolation is tested here; "no store data" for routes that hold none.
ROUTES = {
    "": "no store data",
    "healthz": "no store data",
    "metrics": "no store data (operator totals, no store label; METRICS_TOKEN: test_metrics.py)",
    "demo/": "no store data (the demo store's own page)",
    "demo/order": "no store data (the demo store's own orders)",
    "admin/login/": "no store data",
    "admin/": "test_the_merchant_admin_*",
    "api/v1/events": "test_a_secret_key_writes_only_its_own_stores_log",
    "api/v1/carts/<str:cart>": "SECRET_KEY_CASES",
    "api/v1/carts/<str:cart>/events": "SECRET_KEY_CASES",
    "api/v1/carts/<str:cart>/browser-grant": "test_a_secret_keys_grant_opens_no_cart_of_the_other",
    "api/v1/carts/<str:cart>/score": "SECRET_KEY_CASES",
    "api/v1/shoppers/erase": "SHOPPER_CASES",
    "api/v1/shoppers/export": "SHOPPER_CASES",
    "api/v1/shoppers/<shopper_id:id>": "SHOPPER_CASES",
    "api/v1/shoppers/<shopper_id:id>/export": "SHOPPER_CASES",
    "api/v1/shopper-sessions": "PUBLISHABLE_KEY_CASES",
    "api/v1/shopper-sessions/offers": "PUBLISHABLE_KEY_CASES",
    "api/v1/coupons/redeem": "SECRET_KEY_CASES",
    "api/v1/coupons/validate": "SECRET_KEY_CASES",
    "api/v1/webhooks/shopify": "test_a_platform_delivery_reaches_only_the_store_it_is_signed_for",
    "api/v1/webhooks/woocommerce/<str:store_id>": (
        "test_a_platform_delivery_reaches_only_the_store_it_is_signed_for"
    ),
    "api/v1/webhooks/saleor/<str:store_id>": (
        "test_a_platform_delivery_reaches_only_the_store_it_is_signed_for"
    ),
    "api/v1/webhook-endpoints": "test_a_secret_keys_endpoint_list_and_new_endpoints_are_its_own",
    "api/v1/webhook-endpoints/<str:endpoint_id>": "ENDPOINT_CASES",
    "api/v1/webhook-endpoints/<str:endpoint_id>/deliveries": "ENDPOINT_CASES",
    **{f"api/v1/metrics/{name}": "SECRET_KEY_CASES, MARKETER_API_CASES" for name in METRICS},
    "dashboard/login/": "no store data",
    "dashboard/logout/": "no store data",
    "dashboard/help/": "no store data (the figures' definitions, docs/dashboards.md)",
    "dashboard/": "test_a_marketers_store_list_names_only_their_store",
    "api/schema/": "no store data",
    "api/docs/": "no store data",
    "r/<str:token>": "LINK_PURPOSES",
    "r/<str:token>/o.gif": "LINK_PURPOSES",
    "r/<str:token>/stop": "LINK_PURPOSES",
    "u/<str:token>": "LINK_PURPOSES",
}


def _dashboard_store_routes() -> list[str]:
    return [r for r in _routes() if r.startswith("dashboard/<int:store_id>/")]


def test_every_route_is_in_the_matrix():
    routes = _routes()
    unknown = [
        r
        for r in routes
        if r not in ROUTES
        and not r.startswith("dashboard/<int:store_id>/")  # DASHBOARD_URLS, from the resolver
        and not r.startswith("webhooks/email/")  # test_email_webhooks_*
    ]
    assert unknown == [], "a new route: add its isolation case to this module"
    assert sorted(set(ROUTES) - set(routes)) == []
    assert any(r.startswith("webhooks/email/") for r in routes)
    assert len(_dashboard_store_routes()) >= 8


# A's secret key --------------------------------------------------------------------------------

Request = Callable[[APIClient, Shop], Any]


def _metrics(name: str) -> Request:
    return lambda c, s: c.get(f"/api/v1/metrics/{name}?store={s.store.pk}")


SECRET_KEY_CASES: dict[str, Request] = {
    "GET carts/{server cart}": lambda c, s: c.get(f"/api/v1/carts/{s.server_cart}"),
    "GET carts/{browser cart}": lambda c, s: c.get(f"/api/v1/carts/{s.browser_cart}"),
    "GET carts/{cart}/events": lambda c, s: c.get(f"/api/v1/carts/{s.server_cart}/events"),
    "GET carts/{cart}/score": lambda c, s: c.get(f"/api/v1/carts/{s.server_cart}/score"),
    "GET carts/{cart}/score?at=now": lambda c, s: c.get(
        f"/api/v1/carts/{s.server_cart}/score?at=now"
    ),
    "POST coupons/validate": lambda c, s: c.post(
        "/api/v1/coupons/validate", {"code": s.coupon.code}, format="json"
    ),
    "POST coupons/redeem": lambda c, s: c.post(
        "/api/v1/coupons/redeem",
        {"code": s.coupon.code, "order_id": "order-1", "cart_value": 6000, "currency": "EUR"},
        format="json",
    ),
    **{f"GET metrics/{name}?store=": _metrics(name) for name in METRICS},
}


@pytest.mark.parametrize("case", list(SECRET_KEY_CASES))
def test_a_secret_key_reaches_its_own_store_and_nothing_of_the_other(shops, case):
    a, b = shops
    client = secret_key_client(a)
    send = SECRET_KEY_CASES[case]
    before = rows_of(b)

    theirs = send(client, b)
    mine = send(client, a)

    assert theirs.status_code == 404, theirs.content
    assert leaked(theirs.content, b) == []
    assert rows_of(b) == before
    assert mine.status_code == 200, mine.content
    if "coupons" in case:
        assert theirs.json()["code"] == "coupon_not_found"
        assert mine.json()["code"] == a.coupon.code
    elif "carts" in case:
        assert theirs.json() == {"detail": "This store has no such cart."}
        body = mine.json()
        carts = {e["cart"] for e in body["events"]} if "events" in body else {body["cart"]}
        assert carts <= {a.server_cart, a.browser_cart} and carts
    else:
        assert theirs.json() == {"detail": "No such store."}


def test_a_secret_key_writes_only_its_own_stores_log(shops):
    a, b = shops
    before = rows_of(b)
    b_version = CartState.objects.get(store=b.store, token=b.server_cart).version
    # the same event id as one of B's events, on B's cart token, expecting B's version
    b_event = CartEvent.objects.filter(store=b.store, cart=b.server_cart).order_by("version")[0]
    body = {
        "id": str(b_event.event_id),
        "cart": b.server_cart,
        "type": "order.placed",
        "occurred_at": timezone.now().isoformat(),
        "data": {"order_id": "hijack-1", "total": 1, "currency": "EUR"},
    }

    first = secret_key_client(a).post("/api/v1/events", body, format="json")
    expected = secret_key_client(a).post(
        "/api/v1/events",
        {**body, "id": str(uuid.uuid4()), "expected_version": b_version},
        format="json",
    )

    # A's own cart under that token: a new one (version 1), not B's
    assert first.status_code == 201, first.content
    assert (first.json()["events"][0]["cart"], first.json()["events"][0]["version"]) == (
        b.server_cart,
        1,
    )
    assert first.json()["events"][0]["duplicate"] is False
    assert expected.status_code == 409, expected.content  # A's cart is at 1, whatever B's is
    assert CartState.objects.get(store=a.store, token=b.server_cart).version == 1
    assert rows_of(b) == before


def test_a_secret_keys_grant_opens_no_cart_of_the_other(shops):
    a, b = shops
    before = rows_of(b)

    response = secret_key_client(a).post(f"/api/v1/carts/{b.server_cart}/browser-grant")

    assert response.status_code == 200
    grant = response.json()["grant"]
    now = timezone.now()
    assert grants.browser_grant_valid(store=a.store, cart=b.server_cart, grant=grant, now=now)
    assert not grants.browser_grant_valid(store=b.store, cart=b.server_cart, grant=grant, now=now)
    # with B's own publishable key and origin, A's grant does not open B's cart
    with_bs_key = APIClient().post(
        "/api/v1/shopper-sessions",
        {"publishable_key": b.creds.publishable_key, "cart": b.server_cart, "grant": grant},
        format="json",
        HTTP_ORIGIN=b.origin,
    )
    assert with_bs_key.status_code == 403
    assert with_bs_key.json()["code"] == "cart_not_allowed"
    # with A's, it opens A's cart of that name: A's ticket, A's (no) offers, not B's offer
    session = APIClient().post(
        "/api/v1/shopper-sessions",
        {"publishable_key": a.creds.publishable_key, "cart": b.server_cart, "grant": grant},
        format="json",
        HTTP_ORIGIN=a.origin,
    )
    assert session.status_code == 201
    assert tickets.ticket_read(session.json()["ticket"]).store_id == a.store.pk
    offers = APIClient().get(
        "/api/v1/shopper-sessions/offers",
        {"publishable_key": a.creds.publishable_key, "cart": b.server_cart, "grant": grant},
        HTTP_ORIGIN=a.origin,
    )
    assert (offers.status_code, offers.json()) == (200, {"offers": []})
    assert rows_of(b) == before


def _endpoint_path(shop: Shop, tail: str = "") -> str:
    return f"/api/v1/webhook-endpoints/{shop.platforms.endpoint.pk}{tail}"


HIJACK_URL = "https://hijack.example/in"
ENDPOINT_CASES: dict[str, Request] = {
    "GET webhook-endpoints/{id}": lambda c, s: c.get(_endpoint_path(s)),
    "GET webhook-endpoints/{id}/deliveries": lambda c, s: c.get(_endpoint_path(s, "/deliveries")),
    "PATCH webhook-endpoints/{id}": lambda c, s: c.patch(
        _endpoint_path(s),
        {"url": HIJACK_URL, "active": False, "rotate_secret": True},
        format="json",
    ),
    "DELETE webhook-endpoints/{id}": lambda c, s: c.delete(_endpoint_path(s)),
}


@pytest.mark.parametrize("case", list(ENDPOINT_CASES))
def test_a_secret_key_reaches_its_own_endpoints_and_none_of_the_other(shops, case):
    a, b = shops
    client = secret_key_client(a)
    send = ENDPOINT_CASES[case]
    before = rows_of(b)

    theirs = send(client, b)
    mine = send(client, a)

    assert theirs.status_code == 404, theirs.content
    assert theirs.json() == {"detail": "This store has no such endpoint."}
    assert leaked(theirs.content, b) == []
    assert rows_of(b) == before
    # the control: A's key does reach A's endpoint
    if case.startswith("DELETE"):
        assert mine.status_code == 204, mine.content
        assert list(Endpoint.objects.filter(store=a.store)) == []
        return
    assert mine.status_code == 200, mine.content
    if case.endswith("deliveries"):
        assert [(d["webhook_id"], [t["status_code"] for t in d["tries"]]) for d in mine.json()] == [
            (a.platforms.outbound.webhook_id, [200])
        ]
    elif case.startswith("PATCH"):
        body = mine.json()
        assert (body["id"], body["url"], body["active"]) == (
            a.platforms.endpoint.pk,
            HIJACK_URL,
            False,
        )
        assert body["secret"] == integrations_outbound.endpoint_secret(
            Endpoint.objects.get(pk=a.platforms.endpoint.pk)
        )
        assert body["secret"] != integrations_outbound.endpoint_secret(a.platforms.endpoint)
    else:
        assert (mine.json()["id"], mine.json()["url"]) == (
            a.platforms.endpoint.pk,
            a.platforms.endpoint.url,
        )


def test_a_secret_keys_endpoint_list_and_new_endpoints_are_its_own(shops):
    a, b = shops
    client = secret_key_client(a)
    before = rows_of(b)

    listed = client.get("/api/v1/webhook-endpoints")
    made = client.post(
        "/api/v1/webhook-endpoints",
        {"url": "https://hooks.example/new", "event_types": ["cart.abandoned"]},
        format="json",
    )

    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()] == [a.platforms.endpoint.pk]
    assert leaked(listed.content, b) == []
    assert made.status_code == 201, made.content
    assert Endpoint.objects.get(pk=made.json()["id"]).store_id == a.store.pk
    assert rows_of(b) == before
    again = client.get("/api/v1/webhook-endpoints")
    assert [e["id"] for e in again.json()] == [a.platforms.endpoint.pk, made.json()["id"]]


# The same shopper, a customer of both stores, by the shop's id and by address: A's key erases and
# exports A's shopper alone (B's is unknown to it), and its answers name nothing of B.
SHARED_SHOPPER_ID = "customer-of-both"
SHOPPER_CASES: dict[str, Callable[[APIClient], Any]] = {
    "DELETE shoppers/{id}": lambda c: c.delete(f"/api/v1/shoppers/{SHARED_SHOPPER_ID}"),
    "GET shoppers/{id}/export": lambda c: c.get(f"/api/v1/shoppers/{SHARED_SHOPPER_ID}/export"),
    "POST shoppers/erase": lambda c: c.post(
        "/api/v1/shoppers/erase", {"email": SHOPPER_EMAIL}, format="json"
    ),
    "POST shoppers/export": lambda c: c.post(
        "/api/v1/shoppers/export", {"email": SHOPPER_EMAIL}, format="json"
    ),
}


@pytest.mark.parametrize("case", list(SHOPPER_CASES))
def test_a_secret_key_erases_and_exports_only_its_own_stores_shopper(shops, case):
    a, b = shops
    for shop in (a, b):  # the shop's id too, on each store's server cart
        services.events_append(
            store_id=shop.store.pk,
            events=[
                new_event(
                    "page.viewed",
                    shop.server_cart,
                    {"url": "/account", "page_type": "account"},
                    shopper={"id": SHARED_SHOPPER_ID},
                    at=timezone.now(),
                )
            ],
            source=Source.server("isolation"),
        )
    before = rows_of(b)
    keys = list(ShopperKey.objects.filter(store=b.store).order_by("pk").values())

    response = SHOPPER_CASES[case](secret_key_client(a))

    assert response.status_code == 200, response.content
    assert leaked(response.content, b) == []
    assert rows_of(b) == before
    assert list(ShopperKey.objects.filter(store=b.store).order_by("pk").values()) == keys
    # the control: A's own shopper (the same person) is what it reached
    if "export" in case:
        body = response.json()
        assert body["store"] == a.store.pk
        assert [c["token"] for c in body["carts"]] == [a.server_cart]
        assert a.coupon.code in response.content.decode()
    else:
        assert response.json() == {"erased": True, "carts": 1, "keys": 1}
        assert CartState.objects.get(store=a.store, token=a.server_cart).email == ""


# A's publishable key ---------------------------------------------------------------------------


def _grant(shop: Shop) -> str:
    """The shop's own grant for its server cart (as its server hands it to its page)."""
    return grants.browser_grant_issue(
        store=shop.store, cart=shop.server_cart, now=timezone.now()
    ).grant


def _session(a: Shop, origin: str | None = None, **fields: str) -> Any:
    return APIClient().post(
        "/api/v1/shopper-sessions",
        {"publishable_key": a.creds.publishable_key, **fields},
        format="json",
        HTTP_ORIGIN=origin or a.origin,
    )


def _offers(a: Shop, **fields: str) -> Any:
    return APIClient().get(
        "/api/v1/shopper-sessions/offers",
        {"publishable_key": a.creds.publishable_key, **fields},
        HTTP_ORIGIN=a.origin,
    )


# (A, target) -> response; the refusal's code when the target is B
PUBLISHABLE_KEY_CASES: dict[str, tuple[Callable[[Shop, Shop], Any], str]] = {
    "session for the minted cart": (
        lambda a, t: _session(a, cart=t.browser_cart),
        "cart_not_allowed",
    ),
    "session for the granted server cart": (
        lambda a, t: _session(a, cart=t.server_cart, grant=_grant(t)),
        "cart_not_allowed",
    ),
    "session from the store's origin": (
        lambda a, t: _session(a, origin=t.origin),
        "origin_not_allowed",
    ),
    "offers of the minted cart": (
        lambda a, t: _offers(a, cart=t.browser_cart),
        "cart_not_allowed",
    ),
    "offers of the granted server cart": (
        lambda a, t: _offers(a, cart=t.server_cart, grant=_grant(t)),
        "cart_not_allowed",
    ),
}


@pytest.mark.parametrize("case", list(PUBLISHABLE_KEY_CASES))
def test_a_publishable_key_opens_its_own_carts_and_none_of_the_other(shops, case):
    a, b = shops
    send, refusal = PUBLISHABLE_KEY_CASES[case]
    before = rows_of(b)

    theirs = send(a, b)
    mine = send(a, a)

    assert theirs.status_code == 403, theirs.content
    assert theirs.json()["code"] == refusal
    assert leaked(theirs.content, b) == []
    assert rows_of(b) == before
    assert mine.status_code in (200, 201), mine.content
    if case.startswith("offers"):
        offer = a.browser_offer if "minted" in case else a.server_offer
        assert [o["id"] for o in mine.json()["offers"]] == [offer]
    else:
        assert tickets.ticket_read(mine.json()["ticket"]).store_id == a.store.pk


# A's marketer: dashboards, CSV, metrics, live page ---------------------------------------------


def _dashboard_urls() -> dict[str, str]:
    """Every page under /dashboard/<store_id>/, from the resolver; each CSV export by table."""
    urls: dict[str, str] = {}
    for route in _dashboard_store_routes():
        path = "/" + route.replace("<int:store_id>", "{store}")
        if "<slug:table>" in path:
            for table in dashboard_views.EXPORTS:
                urls[f"export {table}.csv"] = path.replace("<slug:table>", table)
        else:
            urls[route.removeprefix("dashboard/<int:store_id>/") or "overview"] = path
    return urls


DASHBOARD_URLS = _dashboard_urls()
MARKETER_API_CASES = {
    f"metrics/{name}": f"/api/v1/metrics/{name}?store={{store}}" for name in METRICS
}


@pytest.mark.parametrize("who", ["marketer", "merchant"])
@pytest.mark.parametrize("page", list(DASHBOARD_URLS) + list(MARKETER_API_CASES))
def test_a_stores_people_see_its_dashboards_and_get_404_for_the_others(shops, page, who):
    a, b = shops
    client = logged_in(getattr(a, who))
    url = {**DASHBOARD_URLS, **MARKETER_API_CASES}[page]
    before = rows_of(b)

    theirs = client.get(url.format(store=b.store.pk))
    mine = client.get(url.format(store=a.store.pk))

    assert theirs.status_code == 404
    assert leaked(theirs.content, b) == []
    assert mine.status_code == 200
    assert rows_of(b) == before


def test_a_marketers_store_list_names_only_their_store(shops):
    a, _ = shops

    response = logged_in(a.marketer).get("/dashboard/")

    assert (response.status_code, response["Location"]) == (302, f"/dashboard/{a.store.pk}/")


# A's merchant in the admin ---------------------------------------------------------------------


def _scoped_objects(shop: Shop) -> dict[str, Any]:
    return {
        "campaigns.campaign": shop.campaign,
        "campaigns.campaignsettings": CampaignSettings.objects.get(store=shop.store),
        "campaigns.enrollment": shop.step.enrollment,
        "campaigns.step": shop.step,
        "campaigns.coupon": shop.coupon,
        "campaigns.suppression": shop.suppression,
        "integrations.connection": shop.platforms.shopify,
        "integrations.inbounddelivery": shop.platforms.inbound,
        "integrations.platformcode": shop.platforms.code,
        "integrations.endpoint": shop.platforms.endpoint,
        "integrations.outbounddelivery": shop.platforms.outbound,
    }


def _admin_key(model: Any) -> str:
    return f"{model._meta.app_label}.{model._meta.model_name}"


SCOPED_ADMINS = {
    _admin_key(model): model_admin
    for model, model_admin in admin.site._registry.items()
    if isinstance(model_admin, StoreScopedAdmin)
}
SCOPED = sorted(SCOPED_ADMINS)
NOT_SCOPED = sorted(
    _admin_key(model)
    for model, model_admin in admin.site._registry.items()
    if not isinstance(model_admin, StoreScopedAdmin)
)


def test_the_scoped_admins_are_the_campaigns_and_integrations_ones():
    assert SCOPED == [
        "campaigns.campaign", "campaigns.campaignsettings", "campaigns.coupon",
        "campaigns.enrollment", "campaigns.step", "campaigns.suppression",
        "integrations.connection", "integrations.endpoint", "integrations.inbounddelivery",
        "integrations.outbounddelivery", "integrations.platformcode",
    ]  # fmt: skip


@pytest.mark.parametrize("model", SCOPED)
def test_the_merchant_admin_lists_and_opens_only_the_merchants_store(shops, model):
    a, b = shops
    client = logged_in(a.merchant)
    mine, theirs = _scoped_objects(a)[model], _scoped_objects(b)[model]
    store_of = SCOPED_ADMINS[model].store_id_of  # a code's store is its coupon's
    base = "/admin/{}/{}/".format(*model.split("."))
    before = rows_of(b)

    listing = client.get(base)
    filtered = client.get(f"{base}?store__id__exact={b.store.pk}")
    # B's words: its cart, and its platform delivery's id and cart (what the inbound admin searches)
    words = [b.server_cart, b.platforms.inbound.delivery_id, b.platforms.inbound.cart]
    searched = [client.get(f"{base}?q={word}") for word in words]

    assert listing.status_code == 200
    listed = [o for o in listing.context["cl"].result_list]
    assert mine.pk in [o.pk for o in listed]
    # Every row listed is the merchant's store's (an exit intent may have issued a second coupon).
    assert {store_of(o) for o in listed} == {a.store.pk}
    assert leaked(listing.content, b) == []
    for response in (filtered, *searched):
        assert response.status_code in (200, 302)
        if response.status_code == 200:
            assert theirs.pk not in [o.pk for o in response.context["cl"].result_list]
            # (the search box shows the words searched for)
            assert [m for m in leaked(response.content, b) if m not in words] == []
        else:  # an invalid lookup: the admin's ?e=1
            assert response["Location"] == f"{base}?e=1"
    assert client.get(f"{base}{mine.pk}/change/").status_code == 200
    for page in ("change/", "history/", "delete/"):
        response = client.get(f"{base}{theirs.pk}/{page}")
        if response.status_code == 403:  # the read-only admins refuse deleting anything at all
            assert page == "delete/"
            assert client.get(f"{base}{mine.pk}/delete/").status_code == 403
            continue
        assert (response.status_code, response["Location"]) == (302, "/admin/"), page
    posted = client.post(f"{base}{theirs.pk}/delete/", {"post": "yes"})
    assert posted.status_code in (302, 403)
    assert rows_of(b) == before


def test_the_merchant_admin_changes_nothing_of_the_other_store(shops):
    a, b = shops
    client = logged_in(a.merchant)
    base = "/admin/campaigns/campaign/"
    before = rows_of(b)
    tier = b.campaign.tiers.get(position=2)

    change = client.post(
        f"{base}{b.campaign.pk}/change/", {"name": "Hijacked", "store": a.store.pk, "active": "on"}
    )
    preview = client.get(f"{base}{b.campaign.pk}/preview/{tier.pk}/")
    cross_preview = client.get(f"{base}{a.campaign.pk}/preview/{tier.pk}/")
    for action in ("activate", "duplicate", "delete_selected"):
        client.post(
            base, {"action": action, "_selected_action": [b.campaign.pk], "index": 0, "post": "yes"}
        )
    settings_change = client.post(
        f"/admin/campaigns/campaignsettings/{CampaignSettings.objects.get(store=b.store).pk}/change/",
        {"store": b.store.pk, "email_from": "Hijack <x@evil.example>"},
    )
    add_form = client.get(f"{base}add/")

    assert (change.status_code, change["Location"]) == (302, "/admin/")
    assert preview.status_code == 404
    assert cross_preview.status_code == 404
    assert (settings_change.status_code, settings_change["Location"]) == (302, "/admin/")
    choices = [pk for pk, _ in add_form.context["adminform"].form.fields["store"].choices if pk]
    assert [int(str(pk)) for pk in choices] == [a.store.pk]
    assert rows_of(b) == before
    # the control: the same merchant's preview of their own email tier works
    own = client.get(f"{base}{a.campaign.pk}/preview/{a.campaign.tiers.get(position=2).pk}/")
    assert own.status_code == 200


def test_the_merchant_admin_changes_no_connection_or_endpoint_of_the_other_store(shops):
    a, b = shops
    client = logged_in(a.merchant)
    for shop in (a, b):  # a delivery that gave up: what the retry action sends again
        OutboundDelivery.objects.filter(pk=shop.platforms.outbound.pk).update(
            status=OutboundDelivery.Status.FAILED
        )
    before = rows_of(b)
    theirs = b.platforms
    base = "/admin/integrations/"

    connection = client.post(
        f"{base}connection/{theirs.shopify.pk}/change/",
        {"shop_domain": "hijack.myshopify.com", "set_webhook_secret": "hijack", "active": "on"},
    )
    endpoint = client.post(
        f"{base}endpoint/{theirs.endpoint.pk}/change/",
        {"store": b.store.pk, "url": "https://hijack.example/in", "active": "on"},
    )
    for path, action, pk in (
        ("endpoint/", "rotate_secret", theirs.endpoint.pk),
        ("outbounddelivery/", "retry_now", theirs.outbound.pk),
        ("endpoint/", "delete_selected", theirs.endpoint.pk),
    ):
        client.post(
            f"{base}{path}", {"action": action, "_selected_action": [pk], "index": 0, "post": "yes"}
        )
    new_endpoint = client.post(
        f"{base}endpoint/add/", {"store": b.store.pk, "url": "https://hijack.example/in"}
    )
    new_connection = client.post(
        f"{base}connection/add/",
        {"store": b.store.pk, "platform": "saleor", "api_url": "https://hijack.example/graphql/"},
    )

    assert (connection.status_code, connection["Location"]) == (302, "/admin/")
    assert (endpoint.status_code, endpoint["Location"]) == (302, "/admin/")
    for response in (new_endpoint, new_connection):  # B is not a choice: the form's error
        assert response.status_code == 200
        assert list(response.context["adminform"].form.errors) == ["store"]
    assert rows_of(b) == before
    # the control: the same actions on A's own rows do act
    nonce = a.platforms.endpoint.secret_nonce
    for path, action, pk in (
        ("endpoint/", "rotate_secret", a.platforms.endpoint.pk),
        ("outbounddelivery/", "retry_now", a.platforms.outbound.pk),
    ):
        client.post(f"{base}{path}", {"action": action, "_selected_action": [pk], "index": 0})
    assert Endpoint.objects.get(pk=a.platforms.endpoint.pk).secret_nonce != nonce
    assert OutboundDelivery.objects.get(pk=a.platforms.outbound.pk).status == "pending"
    assert rows_of(b) == before


@pytest.mark.parametrize("model", NOT_SCOPED)
def test_the_admins_not_scoped_per_store_are_closed_to_merchants(shops, model):
    a, b = shops
    app_label, model_name = model.split(".")
    client = logged_in(a.merchant)

    assert client.get(f"/admin/{app_label}/{model_name}/").status_code == 403
    assert client.get(f"/admin/{app_label}/").status_code in (403, 404)
    if model == "carts.store":
        assert client.get(f"/admin/carts/store/{b.store.pk}/change/").status_code == 403
    root = User.objects.create_superuser(username=f"root-{model}", password="pw-1")
    assert logged_in(root).get(f"/admin/{app_label}/{model_name}/").status_code == 200


def test_a_marketer_is_not_let_into_the_admin(shops):
    a, _ = shops

    response = logged_in(a.marketer).get("/admin/campaigns/campaign/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# Links in A's emails ---------------------------------------------------------------------------

LINK_PURPOSES = {
    # purpose: (path of a token, method, the event the control appends to A's cart)
    "restore": (lambda token: f"/r/{token}", "get", "campaign.link_clicked"),
    "open": (lambda token: f"/r/{token}/o.gif", "get", "campaign.email_opened"),
    "unsubscribe": (lambda token: f"/u/{token}", "post", "campaign.unsubscribed"),
    "stop": (lambda token: f"/r/{token}/stop", "post", "campaign.reminders_declined"),
}


def _campaign_event_types(shop: Shop) -> list[str]:
    return list(
        CartEvent.objects.filter(store=shop.store, type__startswith="campaign.")
        .exclude(type="campaign.coupon_issued")
        .order_by("position")
        .values_list("type", flat=True)
    )


@pytest.mark.parametrize("purpose", list(LINK_PURPOSES))
def test_a_link_of_as_step_acts_on_a_alone_and_a_tampered_one_on_nothing(shops, purpose):
    a, b = shops
    path, method, event_type = LINK_PURPOSES[purpose]
    client = Client()
    token = links.token_for(a.step.link_id, purpose)
    # A's signature over B's step's link id (the same length: a UUID's hex)
    tampered = token.replace(a.step.link_id.hex, b.step.link_id.hex)
    assert tampered != token
    before = rows_of(b)

    refused = getattr(client, method)(path(tampered))
    assert refused.status_code == 404
    assert "This link is not valid." in refused.content.decode()
    assert leaked(refused.content, b) == []
    assert rows_of(b) == before

    acted = getattr(client, method)(path(token))
    assert acted.status_code in (200, 302)
    assert event_type in _campaign_event_types(a)
    # the shopper is a customer of both stores: B's suppressions, steps and log stay as they were
    assert rows_of(b) == before


# Email provider webhooks -----------------------------------------------------------------------

BOUNCE = {
    "RecordType": "Bounce",
    "ID": 4323372036854775807,
    "Type": "HardBounce",
    "TypeCode": 1,
    "Name": "Hard bounce",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Metadata": {},
    "Description": "The server was unable to deliver your message.",
    "Details": "unknown user",
    "Email": SHOPPER_EMAIL,
    "From": "shop@a.example",
    "BouncedAt": "2026-11-05T16:33:54Z",
    "Inactive": True,
    "Subject": "Your cart",
}


def _webhook(body: dict[str, Any], auth: str) -> Any:
    basic = "Basic " + base64.b64encode(auth.encode()).decode()
    return Client().post(
        "/webhooks/email/postmark/tracking/",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=basic,
    )


STORE_SECRETS = {
    "secret key": lambda s: s.creds.secret_key,
    "publishable key": lambda s: s.creds.publishable_key,
    "webhook secret": lambda s: s.creds.webhook_secret,
}


@pytest.mark.parametrize("secret", list(STORE_SECRETS))
def test_email_webhooks_take_no_stores_credentials(shops, secret):
    a, b = shops
    before = rows_of(b)
    about_b = {**BOUNCE, "Metadata": {"campaign_link": str(b.step.link_id)}}
    value = STORE_SECRETS[secret](a)

    for auth in (f"{a.store.pk}:{value}", f"operator-hook:{value}", f"{value}:x"):
        assert _webhook(about_b, auth).status_code == 400, auth
    assert rows_of(b) == before
    # the control: the operator's secret does reach the step named
    assert _webhook(about_b, WEBHOOK_SECRET).status_code == 200
    assert Suppression.objects.filter(store=b.store).count() > len(before["suppressions"])


def test_email_webhooks_a_message_id_of_one_store_never_names_the_others_step(shops):
    a, b = shops
    before_a, before_b = rows_of(a), rows_of(b)
    crossed = {**BOUNCE, "MessageID": f"<step-{b.step.pk}.{a.store.pk}@a.example>"}

    assert _webhook(crossed, WEBHOOK_SECRET).status_code == 200

    assert rows_of(a) == before_a
    assert rows_of(b) == before_b
    own = {**BOUNCE, "ID": 1, "MessageID": f"<step-{a.step.pk}.{a.store.pk}@a.example>"}
    assert _webhook(own, WEBHOOK_SECRET).status_code == 200
    assert "campaign.email_bounced" in _campaign_event_types(a)
    assert rows_of(b) == before_b


# Platform webhooks -----------------------------------------------------------------------------


def _woocommerce_order() -> bytes:
    return json.dumps(fixture_json("woocommerce", "order_created.json")).encode()


def _delivery_ids(shop: Shop) -> list[tuple[str, str, str]]:
    return list(
        InboundDelivery.objects.filter(store=shop.store)
        .order_by("pk")
        .values_list("platform", "delivery_id", "cart")
    )


def test_a_platform_delivery_reaches_only_the_store_it_is_signed_for(shops):
    a, b = shops
    before_a, before_b = rows_of(a), rows_of(b)
    # B's own checkout, its delivery id replayed, and an order: all signed with A's secrets
    checkout = shopify_checkout(b.platforms.cart_token, b.platforms.checkout_token)
    order = _woocommerce_order()
    replayed = b.platforms.inbound.delivery_id

    refused = {
        "shopify, B's shop domain": post_shopify(
            checkout,
            secret=a.platforms.shopify_secret,
            domain=b.platforms.shopify.shop_domain,
            webhook_id=f"{replayed}-new",
        ),
        "woocommerce, B's store": post_woocommerce(
            b.store.pk, order, secret=a.platforms.woocommerce_secret, delivery="wc-crossed"
        ),
        "saleor, B's store (no Saleor connection)": PLATFORM.post(
            f"/api/v1/webhooks/saleor/{b.store.pk}",
            data=checkout,
            content_type="application/json",
            HTTP_SALEOR_EVENT="checkout_created",
            HTTP_SALEOR_SIGNATURE="eyJhbGciOiJSUzI1NiJ9..c2ln",
        ),
    }

    assert {case: (r.status_code, r.json()["code"]) for case, r in refused.items()} == {
        "shopify, B's shop domain": (401, "bad_signature"),
        "woocommerce, B's store": (401, "bad_signature"),
        "saleor, B's store (no Saleor connection)": (404, "unknown_shop"),
    }
    for response in refused.values():
        assert leaked(response.content, b) == []
    assert rows_of(b) == before_b
    assert rows_of(a) == before_a
    # the control: A's secrets with A's domain and store land in A's log alone, the replayed
    # delivery id included (deliveries are told apart per store), B's tokens naming A's own cart
    mine_shopify = post_shopify(
        checkout,
        secret=a.platforms.shopify_secret,
        domain=a.platforms.shopify.shop_domain,
        webhook_id=replayed,
    )
    mine_woocommerce = post_woocommerce(
        a.store.pk, order, secret=a.platforms.woocommerce_secret, delivery="wc-mine"
    )
    assert mine_shopify.json() == {"outcome": "recorded", "events": 3}
    assert (mine_woocommerce.status_code, mine_woocommerce.json()["outcome"]) == (200, "recorded")
    delivered = _delivery_ids(a)
    assert delivered[:2] == [
        ("shopify", a.platforms.inbound.delivery_id, a.platforms.inbound.cart),
        ("shopify", replayed, b.platforms.inbound.cart),
    ]
    assert [(p, d) for p, d, _ in delivered[2:]] == [("woocommerce", "wc-mine")]
    assert CartState.objects.get(store=a.store, token=b.platforms.inbound.cart).status == "checkout"
    assert rows_of(b) == before_b


# Websockets (committed: consumers run in a thread pool) ----------------------------------------

committed_shops = database_sync_to_async(
    lambda: (shop_build("a", platforms=False), shop_build("b", platforms=False))
)
rows_async = database_sync_to_async(rows_of)


async def _shopper_socket(origin: str) -> WebsocketCommunicator:
    socket = WebsocketCommunicator(
        application, "/ws/v1/shopper/", headers=[(b"origin", origin.encode())]
    )
    connected, _ = await socket.connect(timeout=5)
    assert connected
    return socket


async def _closed_with(socket: WebsocketCommunicator) -> Any:
    code = (await socket.receive_output(timeout=5)).get("code")
    await socket.disconnect()
    return code


@database_sync_to_async
def _ticket(shop: Shop, cart: str) -> str:
    response = _session(shop, cart=cart)
    assert response.status_code == 201, response.content
    return str(response.json()["ticket"])


@pytest.mark.asyncio
async def test_a_shopper_ticket_opens_its_own_cart_and_acts_on_nothing_of_the_other(committed_db):
    a, b = await committed_shops()
    before = await rows_async(b)

    socket = await _shopper_socket(a.origin)
    await socket.send_json_to({"type": "hello", "ticket": await _ticket(a, a.browser_cart)})
    welcome = await socket.receive_json_from(timeout=5)
    pending = await socket.receive_json_from(timeout=5)
    assert (welcome["type"], welcome["store"], welcome["cart"]) == (
        "welcome",
        a.store.pk,
        a.browser_cart,
    )
    assert (pending["type"], pending["id"]) == ("offer", a.browser_offer)  # the control

    # an event naming B's cart lands in the session's cart
    event = _browser_event("page.viewed", {"url": "/cart", "page_type": "cart"}, timezone.now())
    await socket.send_json_to({"type": "event", "event": {**event, "cart": b.browser_cart}})
    assert (await socket.receive_json_from(timeout=5))["type"] == "appended"
    # B's offers are not this cart's: reactions refused, an ack touches only this cart's set
    for kind in ("offer.shown", "offer.accepted", "offer.dismissed"):
        await socket.send_json_to({"type": kind, "offer": b.browser_offer})
        error = await socket.receive_json_from(timeout=5)
        assert (error["type"], error["code"]) == ("error", "invalid_message")
    await socket.send_json_to({"type": "ack", "offer": b.browser_offer})
    await socket.send_json_to({"type": "ping"})
    answer = await socket.receive_json_from(timeout=5)
    if answer["type"] == "error":  # an ack of an offer this socket was not sent may be refused
        assert answer["code"] == "invalid_message"
        answer = await socket.receive_json_from(timeout=5)
    assert answer["type"] == "pong"
    await socket.disconnect()

    assert await rows_async(b) == before
    last = await database_sync_to_async(
        lambda: CartEvent.objects.filter(store=a.store, cart=a.browser_cart).order_by("-version")[0]
    )()
    assert last.type == "page.viewed"


@pytest.mark.asyncio
async def test_a_tampered_or_foreign_origin_ticket_opens_nothing(committed_db):
    a, b = await committed_shops()
    before = await rows_async(b)
    mine = await _ticket(a, a.browser_cart)
    theirs = await _ticket(b, b.browser_cart)
    # B's claims under A's signature
    tampered = theirs.rsplit(":", 1)[0] + ":" + mine.rsplit(":", 1)[1]

    for origin, ticket, code in (
        (a.origin, tampered, 4401),
        (a.origin, theirs, 4406),  # B's ticket, on A's storefront
    ):
        socket = await _shopper_socket(origin)
        await socket.send_json_to({"type": "hello", "ticket": ticket})
        assert await _closed_with(socket) == code

    assert await rows_async(b) == before
    socket = await _shopper_socket(a.origin)  # the control: A's own ticket still opens A's cart
    await socket.send_json_to({"type": "hello", "ticket": mine})
    assert (await socket.receive_json_from(timeout=5))["store"] == a.store.pk
    await socket.disconnect()


async def _dashboard_socket(shop: Shop, store_id: int) -> WebsocketCommunicator:
    client = await database_sync_to_async(logged_in)(shop.marketer)
    cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    socket = WebsocketCommunicator(
        application,
        f"/ws/v1/dashboard/?store={store_id}",
        headers=[
            (b"host", b"localhost"),  # a browser sends the server's Host; the Origin matches it
            (b"origin", b"http://localhost"),
            (b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()),
        ],
    )
    connected, _ = await socket.connect(timeout=5)
    assert connected
    return socket


@database_sync_to_async
def _append_now(shop: Shop, cart: str) -> None:
    services.events_append(
        store_id=shop.store.pk,
        events=[new_event("cart.item_added", cart, item("SKU-LIVE"), at=datetime.now(UTC))],
        source=Source.server("isolation"),
    )


@pytest.mark.asyncio
async def test_a_marketers_live_socket_gets_their_store_only(committed_db):
    a, b = await committed_shops()
    from dashboards import live as dashboards_live

    catch_up = database_sync_to_async(
        lambda: projectors.projector_catch_up(name=dashboards_live.NAME)
    )
    await catch_up()

    refused = await _dashboard_socket(a, b.store.pk)
    assert await _closed_with(refused) == 4403

    socket = await _dashboard_socket(a, a.store.pk)
    snapshot = await socket.receive_json_from(timeout=5)
    assert (snapshot["type"], snapshot["store"]) == ("snapshot", a.store.pk)
    assert leaked(json.dumps(snapshot), b) == []
    await _append_now(b, b.server_cart)
    await catch_up()
    assert await socket.receive_nothing(timeout=0.5)
    await _append_now(a, a.server_cart)  # the control: A's events do arrive
    await catch_up()
    frame = await socket.receive_json_from(timeout=5)
    assert (frame["type"], frame["cart"]) == ("event", a.server_cart)
    await socket.disconnect()
