"""Every append rescores the cart in the same transaction; the API returns and explains it."""

from __future__ import annotations

import math

import pytest

from carts.models import CartState
from recovery import serving
from tests.conftest import event, item


@pytest.fixture(autouse=True)
def fresh_models(settings):
    settings.RECOVERY_MODEL_REFRESH_SECONDS = 0
    serving.MODELS.clear()
    yield
    serving.MODELS.clear()


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_the_stock_model_scores_a_new_store_from_its_first_event(api, post_events):
    assert post_events(event("cart.item_added", data=item(), at=0)).status_code == 201

    body = api.get("/api/v1/carts/cart-1").json()
    assert 0 < body["score"] < 1
    assert body["model_version"] == serving.stock_model().version == "stock-1"
    assert body["scored_at"] == body["last_activity_at"]
    assert 1 <= len(body["reasons"]) <= 3
    assert set(body["reasons"][0]) == {"specialist", "feature", "value", "log_odds"}
    magnitudes = [abs(r["log_odds"]) for r in body["reasons"]]
    assert magnitudes == sorted(magnitudes, reverse=True)


def test_every_append_updates_the_score(api, post_events):
    scores = []
    steps = [
        event("cart.item_added", data=item(), at=0),
        event("checkout.started", at=60),
        event("checkout.contact_captured", data={"email": "a@example.com"}, at=90),
        event("checkout.shipping_quoted", data={"amount": 0}, at=120),
    ]
    for step in steps:
        assert post_events(step).status_code == 201
        scores.append(api.get("/api/v1/carts/cart-1").json()["score"])
    assert len(set(scores)) == len(scores)  # each event moved it
    # Progress through checkout makes abandonment less likely under the stock model.
    assert scores[-1] < scores[0]
    row = CartState.objects.get(token="cart-1")
    assert row.features["acc"]["checkout_us"] is not None


def test_a_batch_scores_each_cart_once_with_all_its_events(api, post_events):
    post_events(
        event("cart.item_added", "a", data=item(), at=0),
        event("checkout.started", "a", at=10),
        event("cart.item_added", "b", data=item(), at=0),
    )
    a = api.get("/api/v1/carts/a").json()
    b = api.get("/api/v1/carts/b").json()
    assert a["score"] != b["score"]
    assert a["scored_at"] == a["last_activity_at"]


def test_the_explanation_sums_to_the_score_in_log_odds(api, post_events):
    post_events(
        event("page.viewed", data={"url": "/p/1", "page_type": "product", "device": "mobile"}),
        event("cart.item_added", data=item(unit_price=4500), at=30),
        event("coupon.rejected", data={"code": "NOPE"}, at=50),
        event("shopper.exit_intent", data={"trigger": "tab_hidden"}, at=55),
    )
    stored = api.get("/api/v1/carts/cart-1").json()
    body = api.get("/api/v1/carts/cart-1/score").json()

    assert body["score"] == pytest.approx(stored["score"], abs=1e-12)
    assert body["model_version"] == stored["model_version"]
    total = body["base_log_odds"] + sum(s["log_odds"] for s in body["specialists"])
    assert total == pytest.approx(body["log_odds"], abs=1e-9)
    assert sigmoid(body["log_odds"]) == pytest.approx(body["score"], abs=1e-12)
    for specialist in body["specialists"]:
        assert specialist["log_odds"] == pytest.approx(
            sum(f["log_odds"] for f in specialist["features"]), abs=1e-9
        )
    assert len(body["specialists"]) >= 6
    features = {f["feature"]: f["value"] for s in body["specialists"] for f in s["features"]}
    assert features["coupons_rejected"] == 1
    assert features["last_exit_trigger"] == "tab_hidden"
    assert features["device"] == "mobile"
    assert body["reasons"] == stored["reasons"]


def test_explaining_as_of_now_counts_the_time_since_last_activity(api, post_events):
    post_events(event("cart.item_added", data=item(), at=0))  # T0 is in the past
    last = api.get("/api/v1/carts/cart-1/score").json()
    now = api.get("/api/v1/carts/cart-1/score?at=now").json()
    value = {
        which: {f["feature"]: f["value"] for s in body["specialists"] for f in s["features"]}[
            "seconds_since_last_activity"
        ]
        for which, body in (("last", last), ("now", now))
    }
    assert value["last"] == 0
    assert value["now"] > 3600
    assert now["as_of"] > last["as_of"]


def test_a_converted_cart_scores_zero(api, post_events):
    post_events(
        event("cart.item_added", data=item(), at=0),
        event("order.placed", data={"order_id": "o1", "total": 1000, "currency": "EUR"}, at=5),
    )
    assert api.get("/api/v1/carts/cart-1").json()["score"] == 0.0
    body = api.get("/api/v1/carts/cart-1/score").json()
    assert body["converted"] is True and body["score"] == 0.0 and body["specialists"] == []


def test_score_errors(api, post_events):
    post_events(event("cart.item_added", data=item()))
    response = api.get("/api/v1/carts/cart-1/score?at=yesterday")
    assert response.status_code == 400
    assert list(response.json()) == ["at"]  # the field named
    assert api.get("/api/v1/carts/nope/score").status_code == 404


def test_another_stores_cart_is_404(api, post_events, db):
    from rest_framework.test import APIClient

    from carts import services

    post_events(event("cart.item_added", data=item()))
    other = services.store_create(name="Other")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {other.secret_key}")
    assert client.get("/api/v1/carts/cart-1/score").status_code == 404
    assert client.get("/api/v1/carts/cart-1").status_code == 404


def test_a_returning_shoppers_history_feeds_the_score(api, post_events):
    shopper = {"id": "u-7"}
    post_events(
        event("cart.item_added", "old-1", data=item(), at=0, shopper=shopper),
        event(
            "order.placed", "old-1", data={"order_id": "o", "total": 1000, "currency": "EUR"}, at=9
        ),
        event("cart.item_added", "old-2", data=item(), at=20, shopper=shopper),
    )
    post_events(event("cart.item_added", "new", data=item(), at=100, shopper=shopper))

    row = CartState.objects.get(token="new")
    assert row.features["history"] == {"key": "id:u-7", "orders": 1, "abandonments": 1}
    body = api.get("/api/v1/carts/new/score").json()
    features = {f["feature"]: f["value"] for s in body["specialists"] for f in s["features"]}
    assert (features["past_orders"], features["past_abandonments"]) == (1, 1)


def test_rebuild_gives_the_same_scores(api, post_events):
    from carts import projectors

    post_events(
        event("cart.item_added", "a", data=item(), at=0),
        event("checkout.started", "a", at=10),
        event("cart.item_added", "b", data=item(sku="X", unit_price=9900), at=0),
    )
    live = {
        r.token: (r.score, r.model_version, r.reasons, r.features) for r in CartState.objects.all()
    }
    CartState.objects.update(score=None, model_version="", reasons=[], features={})
    projectors.rebuild("cart_state")
    rebuilt = {
        r.token: (r.score, r.model_version, r.reasons, r.features) for r in CartState.objects.all()
    }
    assert rebuilt == live


def test_history_by_email_is_case_insensitive_and_looked_up_once(api, post_events):
    contact = "checkout.contact_captured"
    post_events(
        event("cart.item_added", "old", data=item(), at=0),
        event(contact, "old", data={"email": "Ann@Example.com"}, at=5),
        event(
            "order.placed", "old", data={"order_id": "o", "total": 1000, "currency": "EUR"}, at=9
        ),
        event("cart.item_added", "other", data=item(), at=0),
        event(contact, "other", data={"email": "bob@example.com"}, at=5),
    )
    # Two carts of the same shopper in one batch: each sees the other's state before the batch.
    post_events(
        event("cart.item_added", "new", data=item(), at=100),
        event(contact, "new", data={"email": "ann@example.com"}, at=105),
    )
    row = CartState.objects.get(token="new")
    assert row.features["history"]["orders"] == 1
    assert row.features["history"]["abandonments"] == 0
    assert row.features["history"]["key"].startswith("email:")
    assert "ann" not in row.features["history"]["key"]  # hashed

    # Later events keep the snapshot (no new lookup changes it).
    post_events(event("cart.item_added", "old-2", data=item(), at=110))
    post_events(event("checkout.started", "new", at=120))
    row.refresh_from_db()
    assert row.features["history"]["orders"] == 1
