"""Browser grants (carts/grants.py): POST /api/v1/carts/{cart}/browser-grant and the format the
shop's server can compute itself with its webhook secret."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from carts import grants
from carts.models import Store
from carts.services import store_create, store_keys_rotate, store_webhook_secret

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.fixture
def shop(db):
    creds = store_create(name="Grant shop")
    return Store.objects.get(pk=creds.store_id), creds


def by_hand(whsec: str, store_id: int, cart: str, expires: int) -> str:
    """docs/snippet.md's recipe, written out as a shop's server would."""
    mac = hmac.new(whsec.encode(), f"{store_id}:{cart}:{expires}".encode(), hashlib.sha256)
    return f"g1.{expires}.{mac.hexdigest()}"


def at(delta: timedelta) -> int:
    return int((NOW + delta).timestamp())


def valid(store: Store, cart: str, grant: object, now: datetime = NOW) -> bool:
    return grants.browser_grant_valid(store=store, cart=cart, grant=grant, now=now)


def test_the_endpoint_gives_a_grant_for_the_cart_valid_for_the_setting(shop, settings):
    store, creds = shop
    response = Client().post(
        "/api/v1/carts/order-2d4e7f/browser-grant",
        headers={"Authorization": f"Bearer {creds.secret_key}"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["cart"] == "order-2d4e7f"
    assert body["expires_in"] == 900 == settings.CARTS_BROWSER_GRANT_SECONDS
    expires = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert body["grant"] == by_hand(
        creds.webhook_secret, store.pk, "order-2d4e7f", int(expires.timestamp())
    )
    assert valid(store, "order-2d4e7f", body["grant"], now=datetime.now(UTC))

    settings.CARTS_BROWSER_GRANT_SECONDS = 60
    short = Client().post(
        "/api/v1/carts/order-2d4e7f/browser-grant",
        headers={"Authorization": f"Bearer {creds.secret_key}"},
    )
    assert short.json()["expires_in"] == 60


def test_the_endpoint_needs_the_secret_key_and_a_valid_token(shop):
    _, creds = shop
    url = "/api/v1/carts/order-1/browser-grant"
    assert Client().post(url).status_code == 401
    for key in (creds.publishable_key, "sk_nope"):
        assert Client().post(url, headers={"Authorization": f"Bearer {key}"}).status_code == 401
    bad = Client().post(
        "/api/v1/carts/bad%20token!/browser-grant",
        headers={"Authorization": f"Bearer {creds.secret_key}"},
    )
    assert bad.status_code == 400 and "cart" in bad.json()


def test_a_grant_is_valid_until_it_expires(shop):
    store, creds = shop
    future = by_hand(creds.webhook_secret, store.pk, "cart-9", at(timedelta(minutes=15)))
    assert valid(store, "cart-9", future)
    assert valid(store, "cart-9", future, now=NOW + timedelta(minutes=14, seconds=59))
    assert not valid(store, "cart-9", future, now=NOW + timedelta(minutes=15))
    past = by_hand(creds.webhook_secret, store.pk, "cart-9", at(timedelta(seconds=-1)))
    assert not valid(store, "cart-9", past)


def test_the_self_computed_format_is_accepted_up_to_24_hours_ahead(shop):
    store, _ = shop
    whsec = store_webhook_secret(store=store)
    assert whsec.startswith("whsec_")
    assert valid(store, "srv:42", by_hand(whsec, store.pk, "srv:42", at(timedelta(hours=24))))
    too_far = by_hand(whsec, store.pk, "srv:42", at(timedelta(hours=24, seconds=1)))
    assert not valid(store, "srv:42", too_far)


def test_a_grant_is_for_one_cart_of_one_store(shop):
    store, _creds = shop
    other = Store.objects.get(pk=store_create(name="Other shop").store_id)
    grant = grants.browser_grant_issue(store=store, cart="cart-1", now=NOW).grant
    assert valid(store, "cart-1", grant)
    assert not valid(store, "cart-2", grant)
    assert not valid(other, "cart-1", grant)
    # Signed with another store's secret, for this store's id: refused too.
    forged = by_hand(store_webhook_secret(store=other), store.pk, "cart-1", at(timedelta(hours=1)))
    assert not valid(store, "cart-1", forged)


def test_tampered_and_malformed_grants_are_refused(shop):
    store, _creds = shop
    grant = grants.browser_grant_issue(store=store, cart="cart-1", now=NOW).grant
    version, expires, mac = grant.split(".")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    later = str(int(expires) + 60)
    for bad in (
        f"{version}.{expires}.{flipped}",
        f"{version}.{later}.{mac}",  # a longer life, same signature
        f"g2.{expires}.{mac}",
        f"{version}.{expires}.{mac.upper()}",
        grant + "0",
        "",
        None,
        12,
        "g1." + "9" * 200,
    ):
        assert not valid(store, "cart-1", bad), bad


def test_rotating_the_stores_keys_revokes_its_grants(shop):
    store, _ = shop
    grant = grants.browser_grant_issue(store=store, cart="cart-1", now=NOW).grant
    store_keys_rotate(store=store, now=NOW)
    assert not valid(store, "cart-1", grant)
