"""POST /api/v1/shopper-sessions and GET .../offers: publishable key, the store's origins, CORS."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from carts import grants
from carts.models import Store
from carts.services import (
    NewEvent,
    events_append,
    store_create,
    store_keys_rotate,
    store_origins_add,
)
from carts.sources import Source
from recovery import cart_tokens, live, tickets

ORIGIN = "https://shop.example"


@pytest.fixture
def shop(db):
    creds = store_create(name="Origins shop")
    store = Store.objects.get(pk=creds.store_id)
    store_origins_add(store=store, origins=["https://Shop.Example:443"])  # normalised
    return store, creds


def minted(shop) -> str:
    return cart_tokens.cart_token_mint(store_id=shop[0].pk)


def post(body: dict, origin: str | None = ORIGIN):
    headers = {"Origin": origin} if origin else {}
    return Client().post(
        "/api/v1/shopper-sessions", body, content_type="application/json", headers=headers
    )


def test_a_ticket_for_a_new_cart(shop):
    store, creds = shop
    response = post({"publishable_key": creds.publishable_key})
    assert response.status_code == 201
    body = response.json()
    assert body["cart"].startswith("c_") and len(body["cart"]) > 20
    assert body["expires_in"] == tickets.TTL_SECONDS <= 60
    assert body["ws_path"] == "/ws/v1/shopper/"
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    claims = tickets.ticket_read(body["ticket"])
    assert (claims.store_id, claims.cart) == (store.pk, body["cart"])


def test_a_ticket_for_a_cart_an_earlier_session_minted(shop):
    store, creds = shop
    minted = post({"publishable_key": creds.publishable_key}).json()["cart"]
    assert cart_tokens.cart_token_minted(store_id=store.pk, token=minted)
    body = post({"publishable_key": creds.publishable_key, "cart": minted}).json()
    assert body["cart"] == minted and "grant" not in body
    assert tickets.ticket_read(body["ticket"]).cart == minted


@pytest.mark.parametrize("origin", ["https://evil.example", "http://shop.example", None])
def test_other_origins_are_refused(shop, origin):
    _, creds = shop
    response = post({"publishable_key": creds.publishable_key}, origin=origin)
    assert response.status_code == 403
    assert response.json()["code"] == "origin_not_allowed"
    assert "ticket" not in response.json()


def test_keys_are_checked(shop):
    store, creds = shop
    assert post({"publishable_key": "pk_nope"}).status_code == 401
    assert post({"publishable_key": creds.secret_key}).status_code == 401  # not a pk_
    store_keys_rotate(store=store, now=store.created_at)
    assert post({"publishable_key": creds.publishable_key}).status_code == 401


def test_field_errors(shop):
    _, creds = shop
    response = post({"publishable_key": creds.publishable_key, "cart": "bad token!"})
    assert response.status_code == 400 and "cart" in response.json()
    assert "publishable_key" in post({}).json()


def test_preflight(shop):
    response = Client().options(
        "/api/v1/shopper-sessions",
        HTTP_ORIGIN="https://anywhere.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "https://anywhere.example"
    assert "POST" in response["Access-Control-Allow-Methods"]
    assert "Content-Type" in response["Access-Control-Allow-Headers"]


def test_pending_offers_need_the_key_and_an_allowed_origin(shop):
    _, creds = shop
    url = "/api/v1/shopper-sessions/offers"
    query = {"publishable_key": creds.publishable_key, "cart": minted(shop)}
    ok = Client().get(url, query, HTTP_ORIGIN=ORIGIN)
    assert ok.status_code == 200 and ok.json() == {"offers": []}
    assert Client().get(url, query, HTTP_ORIGIN="https://evil.example").status_code == 403
    assert (
        Client().get(url, {**query, "publishable_key": "pk_x"}, HTTP_ORIGIN=ORIGIN).status_code
        == 401
    )
    assert (
        Client()
        .get(url, {"publishable_key": creds.publishable_key}, HTTP_ORIGIN=ORIGIN)
        .status_code
        == 400
    )


def test_a_same_origin_get_without_an_origin_header(shop):
    """Browsers send no Origin on same-origin GETs (the demo page is served by this host)."""
    store, creds = shop
    store_origins_add(store=store, origins=["http://testserver"])
    url = "/api/v1/shopper-sessions/offers"
    query = {"publishable_key": creds.publishable_key, "cart": minted(shop)}
    assert Client().get(url, query, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200
    assert Client().get(url, query).status_code == 403  # no origin, no same-origin claim
    cross = Client().get(url, query, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403


def test_errors_are_readable_cross_origin(shop):
    """The snippet must tell a refused key or origin from a network failure."""
    _, creds = shop
    refused = post({"publishable_key": "pk_nope"}, origin="https://elsewhere.example")
    assert refused.status_code == 401
    assert refused["Access-Control-Allow-Origin"] == "https://elsewhere.example"
    invalid = post({"publishable_key": creds.publishable_key, "cart": "bad token!"})
    assert invalid.status_code == 400 and invalid["Access-Control-Allow-Origin"] == ORIGIN


# Carts the browser may open (security review 2, finding 3) --------------------------------------

OFFERS_URL = "/api/v1/shopper-sessions/offers"


def server_cart(creds, cart: str = "order-2d4e7f") -> str:
    """A cart the shop's server made, through the secret-key API."""
    event = {
        "id": str(uuid.uuid4()),
        "cart": cart,
        "type": "cart.item_added",
        "occurred_at": timezone.now().isoformat(),
        "data": {
            "sku": "L-1",
            "name": "Lamp",
            "quantity": 1,
            "unit_price": 5000,
            "currency": "EUR",
        },
    }
    response = Client().post(
        "/api/v1/events",
        event,
        content_type="application/json",
        headers={"Authorization": f"Bearer {creds.secret_key}"},
    )
    assert response.status_code == 201, response.content
    return cart


def grant_for(creds, cart: str) -> dict:
    response = Client().post(
        f"/api/v1/carts/{cart}/browser-grant",
        headers={"Authorization": f"Bearer {creds.secret_key}"},
    )
    assert response.status_code == 200
    return response.json()


def by_hand(whsec: str, store_id: int, cart: str, expires_in: timedelta) -> str:
    expires = int((datetime.now(UTC) + expires_in).timestamp())
    mac = hmac.new(whsec.encode(), f"{store_id}:{cart}:{expires}".encode(), hashlib.sha256)
    return f"g1.{expires}.{mac.hexdigest()}"


def offer_pending(store: Store, cart: str) -> str:
    """An unacknowledged on-site offer with a discount code, as the exit-intent path records it."""
    offer = {
        "id": uuid.uuid4().hex,
        "kind": "percent_discount",
        "discount_code": "NGTGVNKNXL",
        "expires_at": (timezone.now() + timedelta(hours=1)).isoformat(),
    }
    events_append(
        store_id=store.pk,
        events=[
            NewEvent(
                event_id=uuid.uuid4(),
                cart=cart,
                type=live.OFFER_DECIDED,
                schema_version=1,
                occurred_at=timezone.now(),
                data={"decision": "offer", "reason": "", "offer": offer},
            )
        ],
        source=Source.system("recovery"),
    )
    return offer["id"]


def refused(response) -> bool:
    body = response.json()
    return (
        response.status_code == 403
        and body["code"] == "cart_not_allowed"
        and "ticket" not in body
        and "offers" not in body
    )


def test_a_server_made_cart_is_refused_without_a_grant(shop):
    store, creds = shop
    cart = server_cart(creds)
    offer_pending(store, cart)
    response = post({"publishable_key": creds.publishable_key, "cart": cart})
    assert refused(response)
    assert "grant" in response.json()["detail"]
    assert response["Access-Control-Allow-Origin"] == ORIGIN  # the snippet can read the code
    query = {"publishable_key": creds.publishable_key, "cart": cart}
    offers = Client().get(OFFERS_URL, query, HTTP_ORIGIN=ORIGIN)
    assert refused(offers) and b"NGTGVNKNXL" not in offers.content
    # A token that merely looks like the browser's (the old c_ tokens, or a guess) is no better.
    for guess in ("c_" + "A" * 24, "c_" + "A" * 16 + "." + "B" * 22):
        assert refused(post({"publishable_key": creds.publishable_key, "cart": guess}))


def test_with_the_servers_grant_the_browser_opens_the_cart_and_reads_its_offers(shop):
    store, creds = shop
    cart = server_cart(creds)
    offer_id = offer_pending(store, cart)
    granted = grant_for(creds, cart)
    response = post({"publishable_key": creds.publishable_key, "cart": cart, **granted})
    assert response.status_code == 201
    body = response.json()
    assert body["cart"] == cart and tickets.ticket_read(body["ticket"]).cart == cart
    # The grant is not renewed: it lasts as long as the shop's server said, however many
    # sessions it opens (a leaked grant dies at its expiry).
    assert "grant" not in body
    query = {"publishable_key": creds.publishable_key, "cart": cart, "grant": granted["grant"]}
    offers = Client().get(OFFERS_URL, query, HTTP_ORIGIN=ORIGIN)
    assert offers.status_code == 200
    assert [(o["id"], o["discount_code"]) for o in offers.json()["offers"]] == [
        (offer_id, "NGTGVNKNXL")
    ]


def test_a_grant_works_until_it_expires(shop):
    store, creds = shop
    cart = server_cart(creds)
    whsec = creds.webhook_secret
    key = creds.publishable_key
    future = by_hand(whsec, store.pk, cart, timedelta(minutes=5))
    past = by_hand(whsec, store.pk, cart, timedelta(seconds=-5))
    assert post({"publishable_key": key, "cart": cart, "grant": future}).status_code == 201
    assert refused(post({"publishable_key": key, "cart": cart, "grant": past}))
    assert refused(
        Client().get(
            OFFERS_URL, {"publishable_key": key, "cart": cart, "grant": past}, HTTP_ORIGIN=ORIGIN
        )
    )


def test_a_grant_for_another_cart_another_store_or_tampered_is_refused(shop):
    _store, creds = shop
    cart = server_cart(creds)
    other_creds = store_create(name="Other shop")
    other = Store.objects.get(pk=other_creds.store_id)
    mine = grant_for(creds, "order-other")["grant"]
    theirs = grants.browser_grant_issue(store=other, cart=cart, now=timezone.now()).grant
    good = grant_for(creds, cart)["grant"]
    tampered = good[:-1] + ("a" if good[-1] != "a" else "b")
    for grant in (mine, theirs, tampered, "g1.1.x", "x" * 128):
        assert refused(
            post({"publishable_key": creds.publishable_key, "cart": cart, "grant": grant})
        )
    long = post({"publishable_key": creds.publishable_key, "cart": cart, "grant": "x" * 129})
    assert long.status_code == 400 and "grant" in long.json()


def test_minted_tokens_are_for_their_store_only(shop):
    _, creds = shop
    other_creds = store_create(name="Other shop")
    other = Store.objects.get(pk=other_creds.store_id)
    theirs = cart_tokens.cart_token_mint(store_id=other.pk)
    assert refused(post({"publishable_key": creds.publishable_key, "cart": theirs}))


def test_minted_tokens_survive_a_key_rotation_while_the_old_key_is_listed(shop, settings):
    _store, creds = shop
    settings.RECOVERY_TICKET_KEYS = ["old-key-" + "a" * 40]
    token = post({"publishable_key": creds.publishable_key}).json()["cart"]
    assert len(token) <= 128
    settings.RECOVERY_TICKET_KEYS = ["new-key-" + "b" * 40, "old-key-" + "a" * 40]
    assert post({"publishable_key": creds.publishable_key, "cart": token}).status_code == 201
    fresh = post({"publishable_key": creds.publishable_key}).json()["cart"]
    settings.RECOVERY_TICKET_KEYS = ["new-key-" + "b" * 40]  # the old key dropped
    assert refused(post({"publishable_key": creds.publishable_key, "cart": token}))
    assert post({"publishable_key": creds.publishable_key, "cart": fresh}).status_code == 201
