"""Restore links of a connected store go to the platform's own cart (integrations/codes.py
``restore_target``): Shopify's with the code applied through its shareable discount link, on the
shop's own domain; WooCommerce's and Saleor's as recorded; never off the shop's hosts."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest

from campaigns import links
from campaigns.models import CampaignSettings, Coupon, Step, Tier
from carts.models import CartEvent
from integrations import services
from integrations.models import PlatformCart, PlatformCode
from tests.campaigns.conftest import T0, _campaign_step, _shop_cart

RECOVER = "https://checkout.local/548380009/checkouts/123123/recover?key=abc%2Bdef&x=1"


def _step(store_id: int) -> Step:
    cart = _shop_cart(store_id, "cart-1")
    return _campaign_step(cart, channel=Tier.Channel.DISCOUNT)


def _coupon(store_id: int, step: Step) -> Coupon:
    return Coupon.objects.create(
        store_id=store_id,
        cart="cart-1",
        code="SAVE10-7K2M9Q",
        step=step,
        kind=Coupon.Kind.PERCENT,
        amount=10,
        issued_at=T0,
        expires_at=datetime(2099, 1, 1, tzinfo=UTC),
    )


def _follow(client, step: Step) -> str:
    response = client.get(urlsplit(links.restore_url(step.link_id)).path)
    assert response.status_code == 302
    return str(response["Location"])


def _clicks(store_id: int) -> int:
    return CartEvent.objects.filter(store_id=store_id, type="campaign.link_clicked").count()


def _platform_cart(store_id: int, platform: str, url: str) -> None:
    PlatformCart.objects.create(
        store_id=store_id, platform=platform, cart="cart-1", restore_url=url
    )


def test_shopify_restore_applies_the_confirmed_code_and_returns_to_the_checkout(client, store):
    CampaignSettings.objects.create(store=store, cart_url="https://shop.example/cart")
    connection = services.connection_create(
        store_id=store.pk, platform="shopify", shop_domain="Test-Shop.myshopify.com"
    )
    step = _step(store.pk)
    coupon = _coupon(store.pk, step)
    PlatformCode.objects.create(coupon=coupon, connection=connection, state="confirmed")
    _platform_cart(store.pk, "shopify", RECOVER)

    location = _follow(client, step)

    assert location == (
        "https://test-shop.myshopify.com/discount/SAVE10-7K2M9Q?redirect="
        "%2F548380009%2Fcheckouts%2F123123%2Frecover%3Fkey%3Dabc%252Bdef%26x%3D1"
    )
    assert _clicks(store.pk) == 1


def test_shopify_restore_without_a_confirmed_code_goes_to_the_checkout_on_the_shop(client, store):
    connection = services.connection_create(
        store_id=store.pk, platform="shopify", shop_domain="test-shop.myshopify.com"
    )
    step = _step(store.pk)
    PlatformCode.objects.create(coupon=_coupon(store.pk, step), connection=connection)
    _platform_cart(store.pk, "shopify", RECOVER)

    assert _follow(client, step) == (
        "https://test-shop.myshopify.com/548380009/checkouts/123123/recover?key=abc%2Bdef&x=1"
    )


@pytest.mark.parametrize("platform", ["woocommerce", "saleor"])
def test_woocommerce_and_saleor_restore_goes_to_the_recorded_cart_as_is(client, store, platform):
    services.connection_create(
        store_id=store.pk, platform=platform, storefront_url="https://shop.example.org/"
    )
    step = _step(store.pk)
    _coupon(store.pk, step)
    url = "https://shop.example.org/checkout/order-pay/12/?pay_for_order=true&key=wc_order_x"
    _platform_cart(store.pk, platform, url)

    assert _follow(client, step) == url
    assert _clicks(store.pk) == 1


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/checkout",
        "javascript:alert(1)",
        "https://shop.example.org@evil.example/",
        "https://evil.example/?u=https://shop.example.org/",
    ],
)
def test_no_restore_link_leaves_the_shops_hosts(client, store, url):
    CampaignSettings.objects.create(store=store, cart_url="https://shop.example/cart")
    services.connection_create(
        store_id=store.pk, platform="woocommerce", storefront_url="https://shop.example.org/"
    )
    step = _step(store.pk)
    PlatformCart.objects.create(store_id=store.pk, platform="woocommerce", cart="cart-1")
    PlatformCart.objects.filter(store_id=store.pk).update(restore_url=url)

    assert _follow(client, step) == "https://shop.example/cart"  # the store's own cart page
    assert _clicks(store.pk) == 1


def test_a_store_without_a_platform_cart_keeps_its_own_restore_page(client, store):
    CampaignSettings.objects.create(store=store, cart_url="https://shop.example/cart")
    services.connection_create(store_id=store.pk, platform="shopify", shop_domain="a.myshopify.com")
    step = _step(store.pk)

    assert _follow(client, step) == "https://shop.example/cart"
