"""The ingestion API refuses bad input with the right status and a useful body, storing nothing."""

from __future__ import annotations

import random
import types
from datetime import UTC, datetime

import pytest
from django.core.cache import cache
from django.test import override_settings
from rest_framework.test import APIClient

from carts import event_types, services
from carts.models import CartEvent, CartState
from tests.conftest import event, item

EVENTS_URL = "/api/v1/events"


def stored(store) -> int:
    return CartEvent.objects.filter(store=store).count()


# Malformed and invalid bodies ------------------------------------------------------------------

UNKNOWN_TYPE = f"Unknown event type 'cart.exploded'. Known: {', '.join(event_types.CLIENT_TYPES)}."

INVALID = {
    "wrong type in the payload": (
        event("cart.item_added", data=item(quantity="two")),
        {
            "data": {
                "quantity": [
                    "Input should be a valid integer, unable to parse string as an integer."
                ]
            }
        },
    ),
    "wrong type of a top-level field": (
        event("cart.item_added", data=item(), occurred_at=12),
        {"occurred_at": ["Expected an ISO 8601 date and time, such as 2026-11-01T12:00:00Z."]},
    ),
    "id that is not a uuid": (
        event("checkout.started", id="not-a-uuid"),
        {"id": ["Input should be a valid UUID, invalid character: found `n` at 0."]},
    ),
    "payload that is not an object": (
        event("cart.item_added", data=["SKU-1"]),
        {"data": ["Expected a JSON object."]},
    ),
    "unknown event type": (event("cart.exploded"), {"type": [UNKNOWN_TYPE]}),
    "system event type": (
        event("recovery.offer_shown"),
        {"type": ["'recovery.offer_shown' is emitted by the system and cannot be posted."]},
    ),
    "negative quantity": (
        event("cart.item_added", data=item(quantity=-1)),
        {"data": {"quantity": ["Input should be greater than or equal to 1."]}},
    ),
    "negative price": (
        event("cart.item_added", data=item(unit_price=-5)),
        {"data": {"unit_price": ["Input should be greater than or equal to 0."]}},
    ),
    "unknown currency": (
        event("cart.item_added", data=item(currency="EUX")),
        {"data": {"currency": ["'EUX' is not an ISO 4217 currency code."]}},
    ),
    "unknown top-level field": (
        event("cart.item_added", data=item(), colour="red"),
        {"colour": ["Unknown field."]},
    ),
    "unknown payload field": (
        event("cart.item_added", data=item(colour="red")),
        {"data": {"colour": ["Unknown field."]}},
    ),
    "missing payload field": (
        event("cart.item_added", data={"sku": "A", "quantity": 1, "currency": "EUR"}),
        {"data": {"name": ["Field required."], "unit_price": ["Field required."]}},
    ),
    "invalid cart token": (
        event("checkout.started", cart="has spaces"),
        {
            "cart": [
                "1-128 characters: letters, digits and _ . : - (starting with a letter or digit)."
            ]
        },
    ),
    "system event type of campaigns": (
        event("campaign.step_sent"),
        {"type": ["'campaign.step_sent' is emitted by the system and cannot be posted."]},
    ),
    "id that is a number": (
        event("checkout.started") | {"id": 5},
        {"id": ["Expected a UUID string."]},
    ),
    "time that is not a date": (
        event("checkout.started", occurred_at="2026-13-01T00:00:00Z"),
        {"occurred_at": ["Expected an ISO 8601 date and time, such as 2026-11-01T12:00:00Z."]},
    ),
    "boolean schema version": (
        event("cart.item_added", data=item(), schema_version=True),
        {"schema_version": ["Input should be a valid integer."]},
    ),
    "optional field sent as null": (
        event("checkout.started", expected_version=None),
        {"expected_version": ["This field may not be null."]},
    ),
    "payload sent as null": (
        event("checkout.started") | {"data": None},
        {"data": ["Expected a JSON object."]},
    ),
    "invalid shopper": (
        event("checkout.started", shopper={"timezone": "Mars/Base", "locale": "x", "age": 3}),
        {
            "shopper": {
                "timezone": ["'Mars/Base' is not an IANA time zone."],
                "locale": ["Expected a locale such as 'en' or 'pt-BR'."],
                "age": ["Unknown field."],
            }
        },
    ),
    "shopper that is not an object": (
        event("checkout.started", shopper="s-1"),
        {"shopper": {"non_field_errors": ["Expected a JSON object."]}},
    ),
    "schema version from the future": (
        event("cart.item_added", data=item(), schema_version=3),
        {"schema_version": ["cart.item_added has schema versions 1 to 2."]},
    ),
}


@pytest.mark.parametrize(("body", "errors"), INVALID.values(), ids=INVALID.keys())
def test_invalid_event_is_refused_with_the_field_named(post_events, store, body, errors):
    # when an invalid event is posted
    response = post_events(body)

    # then it is a 400 naming the field, and nothing is stored
    assert response.status_code == 400
    assert response.json() == errors
    assert stored(store) == 0
    assert not CartState.objects.filter(store=store).exists()


def test_malformed_json_is_refused(api, store):
    # when the body is not JSON
    response = api.post(EVENTS_URL, data='{"id": "x", ', content_type="application/json")

    # then it is a 400 and nothing is stored
    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")
    assert stored(store) == 0


def test_body_that_is_neither_an_event_nor_a_batch_is_refused(api, store):
    # when a bare list is posted
    response = api.post(EVENTS_URL, [event("checkout.started")], format="json")

    # then it is a 400 and nothing is stored
    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["Expected a JSON object."]}
    assert stored(store) == 0


def test_one_invalid_event_in_a_batch_stores_nothing(post_events, store):
    # when a batch has an invalid event between two valid ones
    response = post_events(
        event("cart.item_added", data=item("A")),
        event("cart.item_added", data=item("B", quantity=0)),
        event("checkout.started"),
    )

    # then the error is reported at its index, and none of the batch is stored
    assert response.status_code == 400
    assert response.json() == {
        "events": {"1": {"data": {"quantity": ["Input should be greater than or equal to 1."]}}}
    }
    assert stored(store) == 0


def test_a_batch_reports_every_invalid_event_envelope_and_payload_alike(post_events, store):
    # when a batch has an event with a bad envelope and, later, one with a bad payload
    response = post_events(
        event("cart.item_added", data=item("A"), cart="no spaces please"),
        event("checkout.started"),
        event("cart.item_added", data=item("B", unit_price=-1)),
    )

    # then both are reported at their index, and nothing is stored
    assert response.status_code == 400
    assert response.json() == {
        "events": {
            "0": {
                "cart": [
                    "1-128 characters: letters, digits and _ . : - (starting with a letter or "
                    "digit)."
                ]
            },
            "2": {"data": {"unit_price": ["Input should be greater than or equal to 0."]}},
        }
    }
    assert stored(store) == 0


def test_unknown_field_next_to_a_batch_is_refused(api, store):
    response = api.post(EVENTS_URL, {"events": [event("checkout.started")], "x": 1}, format="json")

    assert response.status_code == 400
    assert response.json() == {"x": ["Unknown field."]}
    assert stored(store) == 0


def test_batch_of_more_than_1000_events_is_refused(post_events, store):
    # when 1001 events are posted at once
    response = post_events(*[event("page.viewed", data={"url": "/", "page_type": "home"})] * 1001)

    # then it is a 400 and nothing is stored
    assert response.status_code == 400
    assert response.json() == {
        "events": {"non_field_errors": ["List should have at most 1000 items, not 1001."]}
    }
    assert stored(store) == 0


def test_empty_batch_is_refused(post_events, store):
    response = post_events(batch=True)

    assert response.status_code == 400
    assert response.json() == {
        "events": {"non_field_errors": ["List should have at least 1 item, not 0."]}
    }
    assert stored(store) == 0


# Events that are valid alone but not for their cart --------------------------------------------


def test_item_in_another_currency_than_the_cart_is_refused(post_events, store):
    # given a cart in EUR
    assert post_events(event("cart.item_added", data=item("A", currency="EUR"))).status_code == 201

    # when an item in USD is added to it
    response = post_events(event("cart.item_added", data=item("B", currency="USD")))

    # then it is a 400 on data.currency and nothing more is stored
    assert response.status_code == 400
    assert response.json() == {
        "code": "event_rejected",
        "detail": "Cart is in EUR; this event is in USD.",
        "index": 0,
        "field": "data.currency",
        "errors": {"data": {"currency": ["Cart is in EUR; this event is in USD."]}},
    }
    assert stored(store) == 1
    assert CartState.objects.get(store=store, token="cart-1").value == 1000


def test_currency_mismatch_within_one_batch_stores_nothing(post_events, store):
    response = post_events(
        event("cart.item_added", data=item("A", currency="EUR")),
        event("cart.item_added", data=item("B", currency="USD")),
    )

    assert response.status_code == 400
    assert (response.json()["index"], response.json()["field"]) == (1, "data.currency")
    assert stored(store) == 0


def test_stale_expected_version_is_a_409_and_stores_nothing(post_events, store):
    post_events(event("cart.item_added", data=item()))

    response = post_events(event("checkout.started", expected_version=0))

    assert response.status_code == 409
    assert response.json() == {
        "code": "version_conflict",
        "detail": "Cart cart-1 is at version 1, not 0.",
        "cart": "cart-1",
        "expected_version": 0,
        "actual_version": 1,
    }
    assert stored(store) == 1


def test_reused_id_with_another_body_is_a_409_and_stores_nothing(post_events, store):
    first = event("cart.item_added", data=item(quantity=1))
    post_events(first)

    response = post_events({**first, "data": item(quantity=2)})

    assert response.status_code == 409
    assert response.json() == {
        "code": "event_id_conflict",
        "detail": f"Event {first['id']} was already stored with a different body.",
        "event_id": first["id"],
    }
    assert stored(store) == 1


# Size, authentication, tenancy, rate ------------------------------------------------------------


def test_oversize_body_is_refused_before_parsing(post_events, store):
    # given a body limit of 100 bytes
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=100):
        # when a larger (otherwise valid) event is posted
        response = post_events(event("cart.item_added", data=item()))

    # then it is a 413 and nothing is stored
    assert response.status_code == 413
    assert response.json()["detail"].endswith(" bytes; the limit is 100.")
    assert stored(store) == 0


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "Authentication credentials were not provided."),
        ("Bearer sk_not_a_real_key", "Unknown or revoked key."),
        ("Bearer ", "Use 'Authorization: Bearer sk_...'."),
        ("Basic dXNlcjpwYXNz", "Use 'Authorization: Bearer sk_...'."),
        ("publishable", "Unknown or revoked key."),  # a pk_ key cannot write events
        ("revoked", "Unknown or revoked key."),
    ],
    ids=["missing", "unknown", "empty", "basic", "publishable", "revoked"],
)
def test_missing_or_wrong_key_is_a_401(credentials, store, header, detail):
    # given a client with no key, a wrong key, the publishable key or a revoked secret key
    if header == "publishable":
        header = f"Bearer {credentials.publishable_key}"
    if header == "revoked":
        services.store_keys_rotate(store=store, now=datetime.now(UTC))
        header = f"Bearer {credentials.secret_key}"
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)

    # when it posts an event
    response = client.post(EVENTS_URL, event("cart.item_added", data=item()), format="json")

    # then it is a 401 with a Bearer challenge, and nothing is stored
    assert response.status_code == 401
    assert response.json() == {"detail": detail}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert stored(store) == 0


def test_another_stores_cart_is_not_found(api, store):
    # given another store with a cart named like one this store might have
    other = services.store_create(name="Other shop")
    other_api = APIClient()
    other_api.credentials(HTTP_AUTHORIZATION=f"Bearer {other.secret_key}")
    posted = other_api.post(EVENTS_URL, event("cart.item_added", data=item()), format="json")
    assert posted.status_code == 201

    # when this store asks for it
    cart = api.get("/api/v1/carts/cart-1")
    history = api.get("/api/v1/carts/cart-1/events")

    # then it does not exist for this store, and its owner still sees it
    assert (cart.status_code, cart.json()) == (404, {"detail": "This store has no such cart."})
    assert (history.status_code, history.json()) == (
        404,
        {"detail": "This store has no such cart."},
    )
    assert other_api.get("/api/v1/carts/cart-1").json()["version"] == 1
    assert stored(store) == 0


@pytest.fixture
def frozen_rate_window(store, monkeypatch):
    """Pin the throttle's clock 15.5 s into a minute of its own, with a clean counter.

    Store ids repeat across test databases and the Redis counter outlives them, so the minute is
    one far in the future that no other run (or real request) counts in.
    """
    now = random.randrange(10**9, 2 * 10**9) * 60 + 15.5
    monkeypatch.setattr("carts.auth.time", types.SimpleNamespace(time=lambda: now))
    key = f"ratelimit:store:{store.pk}:{int(now // 60)}"
    cache.delete(key)
    yield
    cache.delete(key)


def test_requests_over_the_store_rate_limit_are_a_429(post_events, api, store, frozen_rate_window):
    # given a store allowed 2 requests a minute, which has made 2
    store.rate_limit_per_minute = 2
    store.save(update_fields=["rate_limit_per_minute"])
    assert post_events(event("cart.item_added", data=item("A"))).status_code == 201
    assert post_events(event("cart.item_added", data=item("B"))).status_code == 201

    # when it makes a third, and a fourth (a read)
    response = post_events(event("cart.item_added", data=item("C")))
    read = api.get("/api/v1/carts/cart-1")

    # then both are a 429 saying when to retry, and the third event is not stored
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "45"
    assert response.json() == {"detail": "Request was throttled. Expected available in 45 seconds."}
    assert read.status_code == 429
    assert stored(store) == 2


# Reading history, and duplicate deliveries ------------------------------------------------------


def test_history_after_a_version_returns_only_later_events(post_events, api):
    # given a cart with three events
    posted = post_events(
        event("cart.item_added", data=item("A")),
        event("cart.item_added", data=item("B")),
        event("checkout.started"),
    ).json()["events"]

    # when its history is read after version 1, and after the last version
    later = api.get("/api/v1/carts/cart-1/events", {"after": 1})
    none = api.get("/api/v1/carts/cart-1/events", {"after": 3})

    # then only the later events come back, in version order
    assert later.status_code == 200
    assert [(e["id"], e["version"], e["type"]) for e in later.json()["events"]] == [
        (posted[1]["id"], 2, "cart.item_added"),
        (posted[2]["id"], 3, "checkout.started"),
    ]
    assert none.json() == {"events": []}


def test_all_duplicates_is_200_and_any_new_event_is_201(post_events, store):
    # given an event that was posted once
    first = event("cart.item_added", data=item("A"))
    assert post_events(first).status_code == 201

    # when it is posted again, then again in a batch with a new event
    again = post_events(first)
    mixed = post_events(first, event("cart.item_added", data=item("B")))

    # then the pure redelivery is a 200 storing nothing, the batch with something new a 201
    assert again.status_code == 200
    assert [(e["version"], e["duplicate"]) for e in again.json()["events"]] == [(1, True)]
    assert mixed.status_code == 201
    assert [(e["version"], e["duplicate"]) for e in mixed.json()["events"]] == [
        (1, True),
        (2, False),
    ]
    assert stored(store) == 2
