"""Bounds on ingestion (docs/api.md, "Bounds"): each input past a bound gets its documented 400 and
stores nothing, through the HTTP API with the store's secret key."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from carts import parsers, projections
from carts.models import CartEvent, CartState
from tests.conftest import event, item

EVENTS_URL = "/api/v1/events"
WINDOW_MESSAGE = re.compile(
    r"Must be between \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ and \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
    r"\(a window around the server's clock\)\.$"
)


@pytest.fixture(autouse=True)
def shipped_windows(settings):
    """The shipped defaults (config/settings/base.py), whatever the test settings say."""
    settings.CARTS_SERVER_PAST_DAYS = 400
    settings.CARTS_BROWSER_PAST_DAYS = 30
    settings.CARTS_FUTURE_MINUTES = 10


def stored(store) -> int:
    return CartEvent.objects.filter(store=store).count()


def window_errors(errors: dict) -> list[str]:
    [message] = errors.pop("occurred_at")
    assert WINDOW_MESSAGE.match(message), message
    return [message]


# occurred_at: a window around the server's clock ------------------------------------------------

OUTSIDE_SERVER_WINDOW = {
    "401 days ago": timedelta(days=-401),
    "11 minutes ahead": timedelta(minutes=11),
    "next year": timedelta(days=365),
}


@pytest.mark.parametrize("offset", OUTSIDE_SERVER_WINDOW.values(), ids=OUTSIDE_SERVER_WINDOW.keys())
def test_server_event_outside_its_window_is_refused(post_events, store, offset):
    # when the store's server posts an event dated outside [now - 400 days, now + 10 minutes]
    response = post_events(event("checkout.started", at=datetime.now(UTC) + offset))

    # then it is a 400 naming occurred_at, and nothing is stored
    assert response.status_code == 400
    errors = response.json()
    window_errors(errors)
    assert errors == {}
    assert stored(store) == 0
    assert not CartState.objects.filter(store=store).exists()


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59Z", "0001-01-01T00:30:00Z"])
def test_the_ends_of_the_calendar_are_refused(post_events, store, text):
    response = post_events(event("cart.item_added", data=item()) | {"occurred_at": text})

    assert response.status_code == 400
    window_errors(response.json())
    assert stored(store) == 0


@pytest.mark.parametrize("offset", [timedelta(days=-399), timedelta(minutes=9)])
def test_server_event_inside_its_window_is_stored(post_events, store, offset):
    at = datetime.now(UTC) + offset

    response = post_events(event("checkout.started", at=at))

    assert response.status_code == 201, response.json()
    assert CartEvent.objects.get(store=store).occurred_at == at


def test_the_server_window_is_configurable(post_events, store):
    with override_settings(CARTS_SERVER_PAST_DAYS=5, CARTS_FUTURE_MINUTES=1):
        old = post_events(event("checkout.started", at=datetime.now(UTC) - timedelta(days=6)))
        ahead = post_events(event("checkout.started", at=datetime.now(UTC) + timedelta(minutes=2)))
        recent = post_events(event("checkout.started", at=datetime.now(UTC) - timedelta(days=4)))

    assert (old.status_code, ahead.status_code, recent.status_code) == (400, 400, 201)
    assert stored(store) == 1


def test_in_a_batch_the_window_error_is_keyed_by_index_with_other_errors(post_events, store):
    now = datetime.now(UTC)

    # when a batch's second event is too old and its fourth too old and invalid too
    response = post_events(
        event("checkout.started", cart="b-1", at=now),
        event("checkout.started", cart="b-1", at=now - timedelta(days=500)),
        event("cart.item_added", cart="b-1", data=item(), at=now),
        event("cart.item_added", cart="b-1", data=item(quantity=0), at=now + timedelta(days=2)),
    )

    # then both are reported at their index, and nothing of the batch is stored
    assert response.status_code == 400
    errors = response.json()["events"]
    assert sorted(errors) == ["1", "3"]
    window_errors(errors["1"])
    window_errors(errors["3"])
    assert errors == {
        "1": {},
        "3": {"data": {"quantity": ["Input should be greater than or equal to 1."]}},
    }
    assert stored(store) == 0


def test_an_envelope_error_in_a_batch_still_reports_the_others_windows(post_events, store):
    now = datetime.now(UTC)
    response = post_events(
        event("checkout.started", at=now, colour="red"),
        event("checkout.started", at=now + timedelta(hours=1)),
    )

    assert response.status_code == 400
    errors = response.json()["events"]
    assert errors["0"] == {"colour": ["Unknown field."]}
    window_errors(errors["1"])
    assert errors["1"] == {}
    assert stored(store) == 0


# Numbers every later computation can represent --------------------------------------------------


def test_dwell_ms_of_10_to_the_312_is_a_400_not_a_500(api, store):
    # A 313-digit JSON integer: it once reached recovery/features.py's float division.
    body = json.dumps(
        event("page.viewed", data={"url": "/p", "page_type": "product"}, at=datetime.now(UTC))
    ).replace('"page_type": "product"', '"page_type": "product", "dwell_ms": 1' + "0" * 312)

    response = api.post(EVENTS_URL, data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "data": {"dwell_ms": ["Input should be less than or equal to 86400000."]}
    }
    assert stored(store) == 0


def test_dwell_ms_of_one_day_is_stored(post_events, store):
    data = {"url": "/p", "page_type": "product", "dwell_ms": 86_400_000}

    response = post_events(event("page.viewed", data=data, at=datetime.now(UTC)))

    assert response.status_code == 201
    assert CartEvent.objects.get(store=store).data["dwell_ms"] == 86_400_000


def test_expected_version_beyond_int4_is_refused(post_events, store):
    response = post_events(event("checkout.started", at=datetime.now(UTC), expected_version=2**31))

    assert response.status_code == 400
    assert response.json() == {
        "expected_version": ["Input should be less than or equal to 2147483647."]
    }
    assert stored(store) == 0


def test_a_cart_value_above_bigint_in_one_batch_is_rejected_not_a_500(post_events, store):
    # 10 lines of 100,000 x 10^12 (each line valid on its own): 10^18 in all, past MAX_MONEY,
    # and 93 such lines would pass bigint (the review's 9.3e18 batch: DataError, a 500).
    now = datetime.now(UTC)
    lines = [
        event("cart.item_added", cart="big", data=item(f"S{i}", 100_000, 10**12), at=now)
        for i in range(93)
    ]

    response = post_events(*lines)

    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["index"], body["field"]) == ("event_rejected", 0, "data.quantity")
    assert body["detail"] == (
        "The cart's value would be 100000000000000000 minor units; at most 1000000000000."
    )
    assert stored(store) == 0
    assert not CartState.objects.filter(store=store).exists()


def test_a_cart_may_hold_exactly_max_money(post_events, store):
    now = datetime.now(UTC)
    response = post_events(
        event("cart.item_added", cart="top", data=item("A", 10, 5 * 10**10), at=now),
        event("cart.item_added", cart="top", data=item("B", 1, 5 * 10**11), at=now),
    )
    assert response.status_code == 201
    assert CartState.objects.get(store=store, token="top").value == 10**12

    one_more = post_events(event("cart.item_added", cart="top", data=item("C", 1, 1), at=now))

    assert one_more.status_code == 400 and one_more.json()["code"] == "event_rejected"
    assert stored(store) == 2


def test_line_501_is_rejected(post_events, store):
    # when a batch adds 501 distinct lines to one cart
    now = datetime.now(UTC)
    lines = [
        event("cart.item_added", cart="wide", data=item(f"S{i}", 1, 100), at=now)
        for i in range(projections.MAX_LINES + 1)
    ]

    response = post_events(*lines)

    # then the 501st line is rejected, and none of the batch is stored
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["index"], body["field"]) == ("event_rejected", 500, "data.sku")
    assert body["detail"] == "A cart holds at most 500 distinct lines."
    assert stored(store) == 0

    # and 500 lines are fine, and adding to one of them too
    assert post_events(*lines[:500]).status_code == 201
    more = post_events(event("cart.item_added", cart="wide", data=item("S7", 2, 100), at=now))
    assert more.status_code == 201
    assert CartState.objects.get(store=store, token="wide").item_count == 502


def test_a_line_cannot_grow_past_its_quantity_bound(post_events, store):
    now = datetime.now(UTC)
    assert post_events(
        event("cart.item_added", cart="q", data=item("A", 100_000, 0), at=now)
    ).status_code == (201)

    again = post_events(event("cart.item_added", cart="q", data=item("A", 1, 0), at=now))

    assert again.status_code == 400
    assert again.json()["detail"] == "The line's quantity would be 100001; at most 100000."
    assert stored(store) == 1


# JSON nesting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [33, 100_000])
def test_json_nested_too_deep_is_a_400_parse_error(api, store, levels):
    body = "[" * levels + "]" * levels

    response = api.post(EVENTS_URL, data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": f"JSON parse error - nested deeper than {parsers.MAX_DEPTH} levels",
        "code": "parse_error",
    }
    assert stored(store) == 0


def test_deep_nesting_inside_a_field_is_a_parse_error(api, store):
    # the review's 1000-level array in data.name
    body = json.dumps(event("cart.item_added", data=item(), at=datetime.now(UTC)))
    body = body.replace('"name": "Product SKU-1"', '"name": ' + "[" * 1000 + "]" * 1000)

    response = api.post(EVENTS_URL, data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert stored(store) == 0


def test_32_levels_parse_and_get_field_errors(api, store):
    body = json.dumps(event("checkout.started", at=datetime.now(UTC))).replace(
        '"data": {}', '"data": {"x": ' + "[" * 30 + "]" * 30 + "}"
    )

    response = api.post(EVENTS_URL, data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"data": {"x": ["Unknown field."]}}
    assert stored(store) == 0


def test_malformed_json_is_a_parse_error_with_its_code(api, store):
    response = api.post(EVENTS_URL, data='{"id": ', content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert response.json()["detail"].startswith("JSON parse error - ")


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ("[[", 0), ([], 1), ({"a": 1, "b": []}, 2), ([[0], [[{}]]], 4)],
)
def test_too_deep_counts_nested_containers(value, depth):
    assert parsers.too_deep(value, limit=depth) is False
    assert parsers.too_deep(value, limit=depth - 1) is (depth > 0)
