"""The storefront snippet in headless Chromium against the real ASGI server (uvicorn): the demo
shop's cart, an exit intent through the top of the window, the offer dialog, and the accepted offer
in the cart's log. Screenshots are kept in var/test-screenshots/<test name>/
(tests/e2e/conftest.py)."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from campaigns.services import campaign_demo_ensure
from carts import pii
from carts.models import CartEvent, Store
from carts.services import DEMO_STORE_NAME, store_create, store_origins_add
from carts.sources import browser_event_id
from recovery import cart_tokens
from tests.conftest import subprocess_env
from tests.e2e import procs

MIN_DWELL_SECONDS = 5.0  # the snippet's default data-min-dwell-ms


def _chromium(tmp_path: Path) -> webdriver.Chrome:
    """Debian's chromium and chromedriver (`make test` installs them); never a downloaded one."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver, "install chromium and chromium-driver (make browser)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(
        options=options, service=Service(driver, log_output=str(tmp_path / "chromedriver.log"))
    )


@pytest.fixture
def server(committed_store, tmp_path) -> Iterator[tuple[str, Any]]:
    """uvicorn on a free port, against the test database; the store allows its origin and has the
    demo campaign (an on-site tier offering to any cart with items)."""
    store, creds = committed_store
    port = procs.free_port()
    origin = f"http://127.0.0.1:{port}"
    store.allowed_origins = [origin]
    store.save(update_fields=["allowed_origins"])
    campaign_demo_ensure(store=store)
    # Every cart gets the offer here: the demo's 10% holdout would withhold it from one run in ten
    # (tests/e2e/test_browser_demo_walk.py walks the demo with its holdout).
    store.campaigns.update(holdout_share=0)
    log = tmp_path / "web.log"
    with procs.web_server(port, env=subprocess_env(DJANGO_DEBUG="0"), log=log):
        yield origin, creds


def _types(store_id: int, cart: str) -> list[str]:
    return list(
        CartEvent.objects.filter(store_id=store_id, cart=cart)
        .order_by("version")
        .values_list("type", flat=True)
    )


def _decided(store_id: int, cart: str) -> bool:
    return "recovery.offer_decided" in _types(store_id, cart)


def _pending(store_id: int, cart: str) -> list[dict]:
    from django.utils import timezone

    from recovery import live

    return live.pending_offers(store_id=store_id, cart=cart, now=timezone.now())


def _pointer(driver: webdriver.Chrome, *ys: int) -> None:
    """Move the real pointer (Chrome's input pipeline, which makes the DOM events) through these
    heights, x in the middle. WebDriver actions cannot aim outside the viewport (ActionChains
    raises MoveTargetOutOfBoundsException), so this goes through the DevTools input domain."""
    for y in ys:
        driver.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 640, "y": y})


def _leave_through_the_top(driver: webdriver.Chrome) -> None:
    _pointer(driver, 300, 40, 5, -20)


def test_exit_intent_shows_the_offer_and_accepting_it_is_logged(
    server, committed_store, tmp_path, screenshots
) -> None:
    origin, creds = server
    store, _ = committed_store
    # The demo checkout's server side places orders for the demo store only.
    store.name = DEMO_STORE_NAME
    store.save(update_fields=["name"])
    # ... the first of that name: another committed test's demo store is renamed out of the way
    Store.objects.filter(name=DEMO_STORE_NAME).exclude(pk=store.pk).update(name="Earlier demo")
    tier = store.campaigns.get().tiers.get(channel="onsite")
    started = time.monotonic()
    driver = _chromium(tmp_path)
    try:
        page_url = f"{origin}/demo/?key={creds.publishable_key}"
        driver.get(page_url)
        page_loaded = time.monotonic()
        wait = WebDriverWait(driver, 15)
        wait.until(
            ec.text_to_be_present_in_element_attribute((By.ID, "connection"), "data-state", "open")
        )
        cart = driver.execute_script("return window.Recovery.cart()")
        assert cart

        driver.find_element(By.CSS_SELECTOR, 'button.add[data-sku="MUG-01"]').click()
        procs.wait_for(
            lambda: "cart.item_added" in _types(store.pk, cart), timeout=10, what="the item"
        )
        # The pointer leaving before the minimum dwell is not an exit intent...
        early_leave = time.time()
        _leave_through_the_top(driver)
        _pointer(driver, 300)
        # ...after it, it is.
        time.sleep(max(0.0, MIN_DWELL_SECONDS + 0.3 - (time.monotonic() - page_loaded)))
        _leave_through_the_top(driver)

        dialog: WebElement = wait.until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, '[role="dialog"]'))
        )
        headline = driver.find_element(By.ID, dialog.get_attribute("aria-labelledby") or "")
        assert headline.text == tier.headline
        assert dialog.get_attribute("aria-modal") == "true"
        body_id = (dialog.get_attribute("aria-describedby") or "").split()[0]
        assert driver.find_element(By.ID, body_id).text == tier.body
        assert "Code: " in dialog.text  # a percent discount carries its code
        cta = dialog.find_element(By.CSS_SELECTOR, ".rcv-cta")
        assert cta.text == tier.cta_label
        # Focus is in the dialog and stays there: Tab from the last control wraps to the first.
        assert driver.switch_to.active_element == cta
        cta.send_keys(Keys.TAB)
        assert driver.switch_to.active_element.get_attribute("aria-label") == "Close"
        driver.switch_to.active_element.send_keys(Keys.TAB)
        assert driver.switch_to.active_element == cta

        screenshots.save(driver, "offer.png")

        cta.click()
        procs.wait_for(
            lambda: "recovery.offer_accepted" in _types(store.pk, cart),
            timeout=10,
            what="recovery.offer_accepted in the cart's log",
        )
        assert not driver.find_elements(By.CSS_SELECTOR, '[role="dialog"]')

        exits = CartEvent.objects.filter(store=store, cart=cart, type="shopper.exit_intent")
        assert [e.data for e in exits] == [{"trigger": "mouse_leave"}]
        assert exits[0].occurred_at.timestamp() > early_leave + 2  # the second leave, not the first
        types = _types(store.pk, cart)
        assert types[types.index("shopper.exit_intent") :] == [
            "shopper.exit_intent",
            "campaign.coupon_issued",  # the offer's code is the cart's coupon
            "recovery.offer_decided",
            "recovery.offer_shown",
            "recovery.offer_accepted",
        ]
        decided = CartEvent.objects.get(store=store, cart=cart, type="recovery.offer_decided")
        accepted = CartEvent.objects.get(store=store, cart=cart, type="recovery.offer_accepted")
        assert decided.data["decision"] == "offer"
        assert accepted.data["offer_id"] == decided.data["offer"]["id"]

        # The rest of the demo's checkout, with the offer's code: every event is accepted as sent,
        # and the order comes from the shop's server side (/demo/order), not from the browser.
        code = decided.data["offer"]["discount_code"]
        driver.find_element(By.ID, "start-checkout").click()
        driver.find_element(By.ID, "email").send_keys("ada@example.com")
        driver.find_element(By.ID, "consent-email").click()
        driver.find_element(By.CSS_SELECTOR, '[data-step="contact"] button').click()
        driver.find_element(By.CSS_SELECTOR, 'input[name="shipping"][value="995"]').click()
        driver.find_element(By.CSS_SELECTOR, '[data-step="shipping"] button').click()
        # "Use my discount" filled the code in.
        assert driver.find_element(By.ID, "coupon").get_attribute("value") == code
        # The price shown is the shop's server's quote (the coupons service), not the page's.
        WebDriverWait(driver, 10).until(
            ec.text_to_be_present_in_element((By.ID, "coupon-note"), "Code applied")
        )
        assert driver.find_element(By.ID, "to-pay").text == "€21.64"
        driver.find_element(By.ID, "place-order").click()
        procs.wait_for(
            lambda: "order.placed" in _types(store.pk, cart), timeout=10, what="the order"
        )
        placed = list(
            CartEvent.objects.filter(store=store, cart=cart, version__gt=accepted.version).order_by(
                "version"
            )
        )
        # the address is stored sealed (carts/pii.py); the log's readers open it
        assert [e.data["email"][:5] for e in placed if "email" in e.data] == ["enc1:"]
        pii.events_reveal(placed)
        order = next(e for e in placed if e.type == "order.placed")
        order_id = order.data["order_id"]
        assert [(e.type, e.data) for e in placed] == [
            ("checkout.started", {}),
            ("page.viewed", {"url": page_url, "page_type": "checkout", "device": "desktop"}),
            ("checkout.contact_captured", {"email": "ada@example.com", "consent": {"email": True}}),
            ("checkout.shipping_quoted", {"amount": 995, "currency": "EUR"}),
            (
                "order.placed",
                {
                    "order_id": order_id,
                    # 10% off the mug (rounded half up, as redemption does), express shipping
                    "total": 1299 - 130 + 995,
                    "currency": "EUR",
                    "coupon": code,
                },
            ),
            (
                "campaign.coupon_redeemed",
                {
                    "code": code,
                    "order_id": order_id,
                    "kind": "percent",
                    "amount": 10,
                    "currency": "EUR",
                    "cart_value": 1299,
                    "discount_applied": 130,
                },
            ),
        ]
        assert (order.source, order.source_ref) == ("server", "demo")
        assert set(
            CartEvent.objects.filter(store=store, cart=cart).values_list("source", flat=True)
        ) == {"browser", "server", "system"}
        # A converted cart is done with: the thank-you step calls Recovery.reset(), and the
        # snippet starts the next cart on a new session.
        WebDriverWait(driver, 10).until(
            lambda d: d.execute_script("return Recovery.cart()") != cart
        )

        # No script errors. (Failed requests are the server's business and show in web.log.)
        logs = driver.get_log("browser")
        errors = [e for e in logs if e["level"] == "SEVERE" and e["source"] != "network"]
        assert errors == [], logs
    finally:
        driver.quit()
    print(f"browser part: {time.monotonic() - started:.1f}s")


def _inject_snippet(driver: webdriver.Chrome, **data: str) -> None:
    """The snippet's tag added to the current page, with these data- attributes; waits for it to
    load. fetch and WebSocket are wrapped first, so the test sees every request it makes."""
    loaded = driver.execute_async_script(
        """
        const [attrs, done] = arguments;
        window.calls = [];
        const fetch0 = window.fetch, Socket0 = window.WebSocket;
        window.fetch = (...args) => { calls.push(String(args[0])); return fetch0(...args); };
        window.WebSocket = function (url) { calls.push(url); return new Socket0(url); };
        const s = document.createElement("script");
        s.src = "/static/recovery/recovery.js";
        for (const k in attrs) s.setAttribute("data-" + k, attrs[k]);
        s.onload = () => done(true);
        s.onerror = () => done(false);
        document.head.append(s);
        """,
        data,
    )
    assert loaded


def test_the_snippet_respects_dnt_waits_for_consent_and_works_without_web_storage(
    server, committed_store, tmp_path
) -> None:
    origin, creds = server
    store, _ = committed_store
    driver = _chromium(tmp_path)
    try:
        # Do Not Track, respected: nothing is sent, nothing is opened.
        driver.get(f"{origin}/")
        driver.execute_script(
            "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'})"
        )
        _inject_snippet(driver, key=creds.publishable_key, **{"respect-dnt": "true"})
        assert driver.execute_script("return Recovery.track('checkout.started', {})") is None
        time.sleep(0.5)
        assert driver.execute_script("return calls") == []

        # Consent required, and storage blocked (both throw, as with cookies disabled).
        driver.get(f"{origin}/")
        driver.execute_script(
            """
            for (const name of ["localStorage", "sessionStorage"]) {
              Object.defineProperty(window, name, {
                get() { throw new DOMException("blocked", "SecurityError"); },
              });
            }
            """
        )
        _inject_snippet(
            driver,
            key=creds.publishable_key,
            consent="required",
            **{"min-dwell-ms": "0"},
        )
        assert driver.execute_script("return Recovery.track('checkout.started', {})") is None
        time.sleep(0.5)
        assert driver.execute_script("return calls") == []
        assert driver.execute_script("return Recovery.cart()") is None

        driver.execute_script(
            "window.errors = []; Recovery.on('error', (m) => errors.push(m));"
            "Recovery.on('welcome', (m) => { window.welcome = m; }); Recovery.consent(true);"
        )
        welcome = WebDriverWait(driver, 10).until(
            lambda d: d.execute_script("return window.welcome")
        )
        cart = welcome["cart"]
        assert driver.execute_script("return Recovery.cart()") == cart
        # An invalid event is answered with an error; the next one is appended as usual.
        driver.execute_script("Recovery.track('cart.item_added', {sku: 'S-1'})")
        errors = WebDriverWait(driver, 10).until(lambda d: d.execute_script("return errors"))
        assert [e["code"] for e in errors] == ["invalid_event"]
        event_id = driver.execute_script(
            "return Recovery.track('cart.item_added', {sku: 'S-1', name: 'Scarf', quantity: 2,"
            " unit_price: 2500, currency: 'EUR'})"
        )
        procs.wait_for(
            lambda: CartEvent.objects.filter(
                store=store, cart=cart, event_id=browser_event_id(cart, uuid.UUID(event_id))
            ).exists(),
            timeout=10,
            what="the item",
        )

        # Escape dismisses the offer and gives focus back to where it was.
        link = driver.find_element(By.CSS_SELECTOR, "a")
        driver.execute_script("arguments[0].focus()", link)
        _leave_through_the_top(driver)
        dialog = WebDriverWait(driver, 10).until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, '[role="dialog"]'))
        )
        driver.switch_to.active_element.send_keys(Keys.ESCAPE)
        WebDriverWait(driver, 5).until(ec.staleness_of(dialog))
        assert driver.switch_to.active_element == link
        procs.wait_for(
            lambda: "recovery.offer_dismissed" in _types(store.pk, cart),
            timeout=10,
            what="recovery.offer_dismissed",
        )
        assert "recovery.offer_accepted" not in _types(store.pk, cart)
    finally:
        driver.quit()


# The demo page's choice of key (no browser needed) ---------------------------------------------


def _demo(query: str = "") -> tuple[int, str]:
    response = Client().get("/demo/" + query)
    return response.status_code, response.content.decode()


def test_the_demo_page_uses_the_demo_store_file_or_the_key_given(db, tmp_path) -> None:
    demo_file = tmp_path / "demo-store.json"
    with override_settings(DEMO_STORE_FILE=demo_file):
        status, page = _demo()
        assert status == 200
        assert "run make run (it creates the demo store)" in page
        assert "recovery.js" not in page

        demo_file.write_text('{"store_id": 7, "publishable_key": "pk_demo123"}')
        status, page = _demo()
        assert status == 200
        assert 'src="/static/recovery/recovery.js" data-key="pk_demo123" async' in page
        assert "move your pointer out through the top of the window to see an offer" in page

        status, page = _demo("?key=pk_other-9")
        assert (status, 'data-key="pk_other-9"' in page) == (200, True)

        status, page = _demo("?key=sk_secret")
        assert (status, "recovery.js" in page) == (400, False)
        assert "must be a publishable key" in page


def test_a_hidden_tab_and_then_idleness_are_exit_intents_once_per_page_view(
    server, committed_store, tmp_path
) -> None:
    origin, creds = server
    store, _ = committed_store
    driver = _chromium(tmp_path)
    try:
        driver.get(f"{origin}/")
        _inject_snippet(
            driver,
            key=creds.publishable_key,
            triggers="tab_hidden idle",
            **{"min-dwell-ms": "0", "hidden-ms": "500", "idle-ms": "1500"},
        )
        driver.execute_script("Recovery.on('welcome', (m) => { window.welcome = m; })")
        cart = WebDriverWait(driver, 10).until(
            lambda d: d.execute_script("return window.welcome && window.welcome.cart")
        )
        driver.execute_script(
            "Recovery.track('cart.item_added', {sku: 'S-1', name: 'Scarf', quantity: 1,"
            " unit_price: 2500, currency: 'EUR'})"
        )
        shop = driver.current_window_handle

        # Another tab for a moment: the exit intent goes out while the shop's tab is hidden, the
        # offer arrives and is acknowledged, and it is shown only once the shopper is back.
        driver.switch_to.new_window("tab")
        procs.wait_for(
            lambda: _decided(store.pk, cart) and not _pending(store.pk, cart),
            timeout=10,
            what="the ack",
        )
        time.sleep(0.5)
        assert "recovery.offer_shown" not in _types(store.pk, cart)
        driver.close()
        driver.switch_to.window(shop)
        dialog = WebDriverWait(driver, 10).until(
            ec.visibility_of_element_located((By.CSS_SELECTOR, '[role="dialog"]'))
        )
        dialog.find_element(By.CSS_SELECTOR, ".rcv-close").click()
        procs.wait_for(
            lambda: "recovery.offer_dismissed" in _types(store.pk, cart),
            timeout=10,
            what="recovery.offer_dismissed",
        )

        def exits() -> list[dict]:
            return [
                e.data
                for e in CartEvent.objects.filter(
                    store=store, cart=cart, type="shopper.exit_intent"
                ).order_by("version")
            ]

        # Idle well past data-idle-ms, but the page view has had its exit intent...
        time.sleep(2.0)
        assert exits() == [{"trigger": "tab_hidden"}]
        # ...until a single-page app reports a new page view.
        driver.execute_script(
            "Recovery.track('page.viewed', {url: location.href, page_type: 'cart'})"
        )
        procs.wait_for(lambda: len(exits()) == 2, timeout=10, what="the idle exit intent")
        assert exits() == [{"trigger": "tab_hidden"}, {"trigger": "idle"}]
    finally:
        driver.quit()


def _post(url: str, body: dict | None, secret_key: str) -> dict:
    request = urllib.request.Request(  # noqa: S310 - our own server's http URL
        url,
        data=json.dumps(body).encode() if body is not None else b"",
        headers={"Authorization": f"Bearer {secret_key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own server
        return json.loads(response.read())


def test_the_snippet_opens_granted_server_carts_only_and_corrects_its_clock(
    server, committed_store, tmp_path
) -> None:
    """A stored token of a server-made cart without a grant is refused (cart_not_allowed) and a new
    cart started; Recovery.grant opens the server's cart with its grant. The browser's clock is
    three hours slow: events are stamped with the server's time from the welcome frame."""
    origin, creds = server
    store, _ = committed_store
    for cart in ("order-e2e-1", "order-e2e-2"):
        _post(
            f"{origin}/api/v1/events",
            {
                "id": str(uuid.uuid4()),
                "cart": cart,
                "type": "cart.item_added",
                "occurred_at": datetime.now(UTC).isoformat(),
                "data": {"sku": "L-1", "name": "Lamp", "quantity": 1, "unit_price": 5000,
                         "currency": "EUR"},
            },
            creds.secret_key,
        )  # fmt: skip
    grant = _post(f"{origin}/api/v1/carts/order-e2e-1/browser-grant", None, creds.secret_key)
    driver = _chromium(tmp_path)
    try:
        driver.get(f"{origin}/")
        driver.execute_script(
            """
            const real = Date.now.bind(Date);
            Date.now = () => real() - 3 * 3600 * 1000;  // a browser clock three hours slow
            localStorage.setItem("recovery.cart", "order-e2e-2");  // a server cart, no grant
            window.errors = []; window.welcomes = [];
            window.Recovery = {q: [
              ["on", ["error", (m) => errors.push(m)]],
              ["on", ["welcome", (m) => welcomes.push(m)]],
            ]};
            """
        )
        _inject_snippet(driver, key=creds.publishable_key)
        welcome = WebDriverWait(driver, 10).until(lambda d: d.execute_script("return welcomes[0]"))
        errors = driver.execute_script("return errors")
        assert [(e["code"], e["cart"]) for e in errors] == [("cart_not_allowed", "order-e2e-2")]
        minted = welcome["cart"]
        assert cart_tokens.cart_token_minted(store_id=store.pk, token=minted)

        before = time.time()
        event_id = driver.execute_script("return Recovery.track('checkout.started', {})")
        stored_id = browser_event_id(minted, uuid.UUID(event_id))  # the browser's ids are scoped
        procs.wait_for(
            lambda: CartEvent.objects.filter(store=store, event_id=stored_id).exists(),
            timeout=10,
            what="the event",
        )
        stamped = CartEvent.objects.get(store=store, event_id=stored_id)
        assert stamped.cart == minted
        assert abs(stamped.occurred_at.timestamp() - before) < 30  # not three hours ago

        # The shop's page hands over its server's cart with the grant.
        driver.execute_script("Recovery.grant('order-e2e-1', arguments[0])", grant["grant"])
        WebDriverWait(driver, 10).until(
            lambda d: d.execute_script("return welcomes.length === 2 && welcomes[1].cart")
        )
        assert driver.execute_script("return Recovery.cart()") == "order-e2e-1"
        event_id = driver.execute_script("return Recovery.track('checkout.started', {})")
        procs.wait_for(
            lambda: CartEvent.objects.filter(
                store=store,
                cart="order-e2e-1",
                event_id=browser_event_id("order-e2e-1", uuid.UUID(event_id)),
            ).exists(),
            timeout=10,
            what="the event on the server's cart",
        )
        assert [e.type for e in CartEvent.objects.filter(store=store, cart="order-e2e-2")] == [
            "cart.item_added"
        ]  # nothing reached the cart it was refused
    finally:
        driver.quit()


# The demo checkout's server side (no browser needed) ---------------------------------------------


def _demo_order(body: dict, origin: str = "http://shop.test"):
    return Client().post(
        "/demo/order", body, content_type="application/json", headers={"Origin": origin}
    )


def test_demo_orders_are_placed_server_side_for_the_demo_stores_browser_carts(db) -> None:
    from django.utils import timezone

    from carts import event_types
    from carts.services import NewEvent, events_append
    from carts.sources import Source

    creds = store_create(name=DEMO_STORE_NAME)
    store = Store.objects.get(pk=creds.store_id)
    store_origins_add(store=store, origins=["http://shop.test"])
    cart = cart_tokens.cart_token_mint(store_id=store.pk)
    item = {"sku": "MUG-01", "name": "Mug", "quantity": 2, "unit_price": 1299, "currency": "EUR"}
    version, data = event_types.validate("cart.item_added", None, item)
    for token in (cart, "order-9"):
        events_append(
            store_id=store.pk,
            events=[
                NewEvent(uuid.uuid4(), token, "cart.item_added", version, timezone.now(), data)
            ],
            source=Source.browser("s") if token == cart else Source.server("test"),
        )
    key = creds.publishable_key

    unknown = _demo_order({"publishable_key": key, "cart": cart, "shipping": 495, "coupon": "NOPE"})
    assert (unknown.status_code, unknown.json()["code"]) == (400, "unknown_coupon")
    server_cart = _demo_order({"publishable_key": key, "cart": "order-9", "shipping": 495})
    assert (server_cart.status_code, server_cart.json()["code"]) == (403, "cart_not_allowed")
    elsewhere = _demo_order(
        {"publishable_key": key, "cart": cart, "shipping": 495}, "http://x.test"
    )
    assert elsewhere.status_code == 403
    assert _demo_order({"publishable_key": key, "cart": cart, "shipping": 1}).status_code == 400
    assert (
        _demo_order({"publishable_key": "pk_x", "cart": cart, "shipping": 495}).status_code == 401
    )

    placed = _demo_order({"publishable_key": key, "cart": cart, "shipping": 995})
    assert placed.status_code == 201
    assert placed.json()["total"] == 2 * 1299 + 995
    [order] = CartEvent.objects.filter(store=store, cart=cart, type="order.placed")
    assert order.data == {"order_id": placed.json()["order_id"], "total": 3593, "currency": "EUR"}
    assert (order.source, order.source_ref) == ("server", "demo")

    # Another store's key (not the demo store) cannot place orders through the demo.
    other = store_create(name="A real shop")
    other_store = Store.objects.get(pk=other.store_id)
    store_origins_add(store=other_store, origins=["http://shop.test"])
    theirs = cart_tokens.cart_token_mint(store_id=other_store.pk)
    refused = _demo_order(
        {"publishable_key": other.publishable_key, "cart": theirs, "shipping": 495}
    )
    assert (refused.status_code, refused.json()["code"]) == (403, "not_the_demo_store")
    # Nor can a later store that merely takes the demo store's name.
    namesake = store_create(name=DEMO_STORE_NAME)
    namesake_store = Store.objects.get(pk=namesake.store_id)
    store_origins_add(store=namesake_store, origins=["http://shop.test"])
    minted = cart_tokens.cart_token_mint(store_id=namesake_store.pk)
    body = {"publishable_key": namesake.publishable_key, "cart": minted, "shipping": 495}
    assert (_demo_order(body).status_code, _demo_order(body).json()["code"]) == (
        403,
        "not_the_demo_store",
    )
    # And where demo orders are off (production), the endpoint does not exist.
    with override_settings(DEMO_ORDERS=False):
        off = _demo_order({"publishable_key": key, "cart": cart, "shipping": 995})
    assert off.status_code == 404
