"""The demo as a newcomer walks it, in headless Chromium against the real ASGI server: items in
the cart, an exit intent, the offer (its cap with its currency), "Use my discount", the checkout
with the code filled in and a discount line, and an order charged exactly what the review step
showed; then a campaign email's restore link, opened in another browser, rebuilds the cart with
its code applied. Screenshots are kept in var/test-screenshots/<test name>/
(tests/e2e/conftest.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from campaigns import links
from campaigns.models import Campaign, CampaignSettings, Coupon, Enrollment, Step, Tier
from campaigns.rules import in_holdout
from campaigns.services import campaign_demo_ensure
from carts.models import CartEvent, CartState, Store
from carts.services import DEMO_STORE_NAME
from tests.conftest import subprocess_env
from tests.e2e import procs
from tests.e2e.test_browser_exit_intent import (
    MIN_DWELL_SECONDS,
    _chromium,
    _leave_through_the_top,
    _types,
)


@pytest.fixture
def server(committed_store, tmp_path) -> Iterator[tuple[str, Any]]:
    """uvicorn on a free port, against the test database: the store allows its origin and has
    the demo campaign; the server signs and reads campaign links with this process's keys."""
    store, creds = committed_store
    port = procs.free_port()
    origin = f"http://127.0.0.1:{port}"
    store.allowed_origins = [origin]
    store.save(update_fields=["allowed_origins"])
    campaign_demo_ensure(store=store)
    env = subprocess_env(
        DJANGO_DEBUG="0",
        CAMPAIGNS_LINK_KEYS=",".join(settings.CAMPAIGNS_LINK_KEYS),
        CAMPAIGNS_PUBLIC_URL=origin,
    )
    with procs.web_server(port, env=env, log=tmp_path / "web.log"):
        yield origin, creds


def _euros(text: str) -> int:
    """A shown amount ("€50.21", a discount "\u2212€4.47") in minor units."""
    sign = -1 if text.startswith(("\u2212", "-")) else 1
    return sign * round(float(text.lstrip("\u2212-").removeprefix("€")) * 100)


def _another_cart(old: str) -> Any:
    return lambda d: d.execute_script("return Recovery.cart()") not in (None, old)


def _a_treated_cart(driver, campaign: Campaign) -> str:
    """The page's cart, drawn again ("Start over with a new cart") while it is in the demo
    campaign's holdout (one cart in ten gets no offer: the lift's baseline)."""
    wait = WebDriverWait(driver, 15)
    wait.until(
        ec.text_to_be_present_in_element_attribute((By.ID, "connection"), "data-state", "open")
    )
    cart = driver.execute_script("return Recovery.cart()")
    while in_holdout(campaign_id=campaign.pk, shopper=cart, share=campaign.holdout_share):
        driver.find_element(By.ID, "new-cart").click()
        wait.until(_another_cart(cart))
        cart = driver.execute_script("return Recovery.cart()")
    return cart


def test_the_demo_charges_what_it_shows_and_restore_links_rebuild_the_cart(
    server, committed_store, tmp_path, screenshots
) -> None:
    origin, creds = server
    store, _ = committed_store
    store.name = DEMO_STORE_NAME  # the demo checkout places orders for the demo store only
    store.save(update_fields=["name"])
    # ... the first of that name: another committed test's demo store is renamed out of the way
    Store.objects.filter(name=DEMO_STORE_NAME).exclude(pk=store.pk).update(name="Earlier demo")
    campaign = Campaign.objects.get(store=store)
    onsite = campaign.tiers.get(channel=Tier.Channel.ONSITE)
    assert "up to €20.00" in onsite.body

    driver = _chromium(tmp_path)
    try:
        driver.get(f"{origin}/demo/?key={creds.publishable_key}")
        loaded = time.monotonic()
        cart = _a_treated_cart(driver, campaign)
        for sku in ("MUG-01", "MUG-01", "TEA-03"):
            driver.find_element(By.CSS_SELECTOR, f'button.add[data-sku="{sku}"]').click()
        procs.wait_for(
            lambda: _types(store.pk, cart).count("cart.item_added") == 3, timeout=10, what="items"
        )

        # Exit intent: the offer, its cap with its currency.
        time.sleep(max(0.0, MIN_DWELL_SECONDS + 0.3 - (time.monotonic() - loaded)))
        _leave_through_the_top(driver)
        dialog = WebDriverWait(driver, 15).until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, '[role="dialog"]'))
        )
        assert "up to €20.00" in dialog.text
        code = dialog.find_element(By.CSS_SELECTOR, ".rcv-code-value").text
        assert Coupon.objects.filter(store=store, cart=cart, code=code).exists()  # a real coupon
        screenshots.save(driver, "demo-1-offer.png")

        # "Use my discount": the code is the checkout's, said so in the cart.
        dialog.find_element(By.CSS_SELECTOR, ".rcv-cta").click()
        notice = WebDriverWait(driver, 5).until(
            ec.visibility_of_element_located((By.ID, "code-notice"))
        )
        assert code in notice.text
        procs.wait_for(
            lambda: "recovery.offer_accepted" in _types(store.pk, cart), timeout=10, what="accept"
        )

        driver.find_element(By.ID, "start-checkout").click()
        driver.find_element(By.ID, "email").send_keys("ada@example.com")
        driver.find_element(By.ID, "consent-email").click()
        driver.find_element(By.CSS_SELECTOR, '[data-step="contact"] button').click()
        driver.find_element(By.CSS_SELECTOR, 'input[name="shipping"][value="995"]').click()
        driver.find_element(By.CSS_SELECTOR, '[data-step="shipping"] button').click()

        # The review step: the code filled in, checked by the server, a discount line.
        assert driver.find_element(By.ID, "coupon").get_attribute("value") == code
        WebDriverWait(driver, 10).until(
            ec.text_to_be_present_in_element((By.ID, "coupon-note"), "Code applied")
        )
        assert driver.find_element(By.ID, "discount-line").is_displayed()
        assert driver.find_element(By.ID, "discount-label").text == f"Discount ({code})"
        subtotal = _euros(driver.find_element(By.ID, "subtotal-amount").text)
        discount = _euros(driver.find_element(By.ID, "discount-amount").text)
        shipping = _euros(driver.find_element(By.ID, "shipping-amount").text)
        shown = _euros(driver.find_element(By.ID, "to-pay").text)
        # 2 mugs and the tea sampler, 10% off (rounded half up), express shipping
        assert (subtotal, discount, shipping) == (2 * 1299 + 1875, -447, 995)
        assert shown == subtotal + discount + shipping == 5021
        screenshots.save(driver, "demo-2-review.png")

        driver.find_element(By.ID, "place-order").click()
        procs.wait_for(lambda: "order.placed" in _types(store.pk, cart), timeout=10, what="order")
        order = CartEvent.objects.get(store=store, cart=cart, type="order.placed")
        assert order.data["total"] == shown  # charged what the review step showed
        assert order.data["coupon"] == code
        thanks = WebDriverWait(driver, 10).until(
            ec.visibility_of_element_located((By.ID, "thanks"))
        )
        assert thanks.text.endswith("€50.21.")
        assert Coupon.objects.get(code=code).redeemed_at is not None
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert [e for e in errors if e["source"] != "network"] == [], errors
    finally:
        driver.quit()

    # A campaign email for another abandoned cart of the demo store, with a discount code: its
    # restore link (the real /r/<token>) leads to /demo/?items=...&code=... (the demo store's
    # cart URL), opened in another browser, as from a mail app.
    abandoned = "c_e2e-abandoned"
    # `make run`'s demo page finds its store's key in a file; this server's is named in the URL.
    cart_url = CampaignSettings.objects.get(store=store).cart_url
    assert cart_url == f"{origin}/demo/?items={{items}}&code={{code}}"
    CampaignSettings.objects.filter(store=store).update(
        cart_url=cart_url.replace("?", f"?key={creds.publishable_key}&")
    )
    _abandoned_cart(store, abandoned)
    email_tier = campaign.tiers.get(channel=Tier.Channel.EMAIL)
    step = _email_step(store, campaign, email_tier, abandoned)
    restore_code = "DEMO10-E2EWALK"
    Coupon.objects.create(
        store=store, cart=abandoned, code=restore_code, step=step, kind=Coupon.Kind.PERCENT,
        amount=10, cap=2000, currency="EUR", issued_at=timezone.now(),
        expires_at=timezone.now() + timedelta(hours=48),
    )  # fmt: skip

    (tmp_path / "other-browser").mkdir()
    other = _chromium(tmp_path / "other-browser")
    try:
        other.get(origin + urlsplit(links.restore_url(step.link_id)).path)
        # The link's parameters are used once and leave the address bar.
        WebDriverWait(other, 10).until(lambda d: "items=" not in d.current_url)
        assert other.current_url == f"{origin}/demo/?key={creds.publishable_key}"
        wait = WebDriverWait(other, 15)
        wait.until(
            ec.text_to_be_present_in_element_attribute((By.ID, "connection"), "data-state", "open")
        )
        rebuilt = other.execute_script("return Recovery.cart()")
        lines = [li.text.split("\n")[0] for li in other.find_elements(By.CSS_SELECTOR, "#lines li")]
        assert lines == ["2 \u00d7 Linen apron", "1 \u00d7 Pour-over coffee kit"]
        assert other.find_element(By.ID, "cart-count").text == "Cart: 3 items"
        assert restore_code in other.find_element(By.ID, "code-notice").text
        procs.wait_for(
            lambda: _types(store.pk, rebuilt).count("cart.item_added") == 2,
            timeout=10,
            what="the rebuilt cart's events",
        )
        state = CartState.objects.get(store=store, token=rebuilt)
        assert sorted((i["sku"], i["quantity"]) for i in state.items) == [
            ("APRON-04", 2),
            ("POUR-02", 1),
        ]
        viewed = procs.wait_for(  # the snippet's page view may follow the items
            lambda: CartEvent.objects.filter(store=store, cart=rebuilt, type="page.viewed").first(),
            timeout=10,
            what="the rebuilt cart's page view",
        )
        assert "code=" not in viewed.data["url"]
        screenshots.save(other, "demo-3-restored.png")

        # At checkout the code is filled in and applied by the server.
        other.find_element(By.ID, "start-checkout").click()
        other.find_element(By.ID, "email").send_keys("ada@example.com")
        other.find_element(By.CSS_SELECTOR, '[data-step="contact"] button').click()
        other.find_element(By.CSS_SELECTOR, '[data-step="shipping"] button').click()
        assert other.find_element(By.ID, "coupon").get_attribute("value") == restore_code
        WebDriverWait(other, 10).until(
            ec.text_to_be_present_in_element((By.ID, "coupon-note"), "Code applied")
        )
        # 2 aprons and the kit, 10% off, standard shipping
        assert _euros(other.find_element(By.ID, "to-pay").text) == 2 * 2900 + 3450 - 925 + 495
        screenshots.save(other, "demo-4-restored-review.png")
        other.find_element(By.ID, "place-order").click()
        procs.wait_for(
            lambda: "order.placed" in _types(store.pk, rebuilt), timeout=10, what="order"
        )
        placed = CartEvent.objects.get(store=store, cart=rebuilt, type="order.placed")
        assert (placed.data["total"], placed.data["coupon"]) == (8820, restore_code)
    finally:
        other.quit()


def _abandoned_cart(store, token: str) -> None:
    import uuid

    from carts import event_types
    from carts.services import NewEvent, events_append
    from carts.sources import Source

    now = timezone.now() - timedelta(minutes=10)
    events = []
    for sku, name, qty, price in (("APRON-04", "Linen apron", 2, 2900),
                                  ("POUR-02", "Pour-over coffee kit", 1, 3450)):  # fmt: skip
        item = {"sku": sku, "name": name, "quantity": qty, "unit_price": price, "currency": "EUR"}
        version, data = event_types.validate("cart.item_added", None, item)
        events.append(NewEvent(uuid.uuid4(), token, "cart.item_added", version, now, data))
    version, data = event_types.validate(
        "checkout.contact_captured", None, {"email": "ada@example.com", "consent": {"email": True}}
    )
    events.append(NewEvent(uuid.uuid4(), token, "checkout.contact_captured", version, now, data))
    events_append(store_id=store.pk, events=events, source=Source.server("test"), now=now)


def _email_step(store, campaign: Campaign, tier: Tier, token: str) -> Step:
    """The email tier's step of the cart, as the scheduler leaves it once sent."""
    cart = CartState.objects.get(store=store, token=token)
    enrollment = Enrollment.objects.create(
        store=store, cart=token, campaign=campaign, shopper="", cart_value=cart.value,
        currency="EUR", abandoned_at=timezone.now() - timedelta(minutes=5),
    )  # fmt: skip
    return Step.objects.create(
        store=store, cart=token, enrollment=enrollment, tier=tier, channel=tier.channel,
        shopper="", due_at=timezone.now() - timedelta(minutes=2), status=Step.Status.SENT,
    )  # fmt: skip
