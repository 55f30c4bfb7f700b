"""POST /api/v1/shopper-sessions and GET .../offers: publishable key, the store's origins, CORS."""

from __future__ import annotations

import pytest
from django.test import Client

from carts.models import Store
from carts.services import store_create, store_keys_rotate, store_origins_add
from recovery import tickets

ORIGIN = "https://shop.example"


@pytest.fixture
def shop(db):
    creds = store_create(name="Origins shop")
    store = Store.objects.get(pk=creds.store_id)
    store_origins_add(store=store, origins=["https://Shop.Example:443"])  # normalised
    return store, creds


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


def test_a_ticket_for_a_known_cart(shop):
    _, creds = shop
    body = post({"publishable_key": creds.publishable_key, "cart": "cart-9"}).json()
    assert body["cart"] == "cart-9"
    assert tickets.ticket_read(body["ticket"]).cart == "cart-9"


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
    query = {"publishable_key": creds.publishable_key, "cart": "cart-1"}
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
    query = {"publishable_key": creds.publishable_key, "cart": "cart-1"}
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
