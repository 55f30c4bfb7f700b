"""The snippet keeps the device token the shopper session gives it (a key of the cooldown of
offers with a code, issue 13) in localStorage and sends it back with its next sessions; a token
the server refuses is replaced; withdrawn consent forgets it. Headless Chromium against uvicorn,
as tests/e2e/test_browser_exit_intent.py."""

from __future__ import annotations

import json

from selenium import webdriver
from selenium.webdriver.support.wait import WebDriverWait

from recovery import tickets
from tests.e2e.test_browser_exit_intent import _chromium, _inject_snippet, server

__all__ = ["server"]  # the live server fixture, shared with the exit-intent tests


def _open(
    driver: webdriver.Chrome,
    origin: str,
    key: str,
    stored: str | None = None,
    *,
    cart: str | None = None,
    requests: int = 1,
) -> dict:
    """A fresh page with the snippet (``stored``: the device token in localStorage before it
    loads, ``cart`` the cart token); the body of its first shopper-session request, once
    welcomed after ``requests`` of them."""
    driver.get(f"{origin}/")
    driver.execute_script(
        """
        const stored = arguments[0], cart = arguments[1];
        if (stored !== null) localStorage.setItem("recovery.device", stored);
        if (cart !== null) localStorage.setItem("recovery.cart", cart);
        window.bodies = []; window.welcomes = [];
        const fetch0 = window.fetch;
        window.fetch = (url, init) => {
          if (String(url).endsWith("/api/v1/shopper-sessions")) bodies.push(JSON.parse(init.body));
          return fetch0(url, init);
        };
        window.Recovery = {q: [["on", ["welcome", (m) => welcomes.push(m)]]]};
        """,
        stored,
        cart,
    )
    _inject_snippet(driver, key=key)
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return welcomes.length"))
    bodies = driver.execute_script("return bodies")
    assert len(bodies) == requests, bodies
    return bodies[0]


def _kept(driver: webdriver.Chrome) -> str | None:
    return driver.execute_script("return localStorage.getItem('recovery.device')")


def test_the_snippet_keeps_its_device_token_and_sends_it_back(
    server, committed_store, tmp_path
) -> None:
    origin, creds = server
    store, _ = committed_store
    driver = _chromium(tmp_path)
    try:
        first = _open(driver, origin, creds.publishable_key)
        assert "device" not in first  # a new browser has none
        token = _kept(driver)
        assert token is not None
        device = tickets.device_read(store_id=store.pk, token=token)
        assert device is not None

        # The next page sends it, and keeps the same device.
        again = _open(driver, origin, creds.publishable_key)
        assert again["device"] == token and _kept(driver) == token

        # A tampered token is replaced by a genuine new one, not an error.
        forged = _open(driver, origin, creds.publishable_key, stored=token[:-2] + "xx")
        assert forged["device"] == token[:-2] + "xx"
        replaced = _kept(driver)
        assert tickets.device_read(store_id=store.pk, token=replaced) not in (None, device)

        # A stored cart the server refuses (400 on `cart`) is dropped; the device token stays,
        # so its cooldowns stay with this browser.
        refused = _open(
            driver, origin, creds.publishable_key, stored=replaced, cart="not a cart", requests=2
        )
        assert refused["cart"] == "not a cart" and refused["device"] == replaced
        assert _kept(driver) == replaced
        assert driver.execute_script("return Recovery.cart()") not in (None, "not a cart")

        # Consent withdrawn: the device token is forgotten with the cart.
        driver.execute_script("Recovery.consent(false)")
        assert _kept(driver) is None
        assert driver.execute_script("return Recovery.cart()") is None
        logs = driver.get_log("browser")
        errors = [e for e in logs if e["level"] == "SEVERE" and e["source"] != "network"]
        assert errors == [], json.dumps(logs)
    finally:
        driver.quit()
