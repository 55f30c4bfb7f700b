"""Old event versions are stored as posted and upcast on every read, never rewritten."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from carts import event_types
from carts.models import CartEvent, CartState
from tests.conftest import event, item

FIXTURE = Path(__file__).parent.parent / "fixtures" / "events" / "item_added_v1.json"


@pytest.fixture
def v1_batch() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize(
    ("price", "currency", "unit_price"),
    [
        ("12.99", "EUR", 1299),
        ("1500", "JPY", 1500),
        ("0.5", "USD", 50),
        ("1.234", "KWD", 1234),
        ("0.005", "EUR", 1),  # half up
        ("0", "EUR", 0),
    ],
)
def test_item_added_v1_price_upcasts_to_integer_minor_units(price, currency, unit_price):
    # given a v1 payload with a decimal price in major units
    v1 = {"sku": "A", "name": "A", "quantity": 1, "price": price, "currency": currency}
    original = copy.deepcopy(v1)

    # when it is upcast
    current = event_types.upcast("cart.item_added", 1, v1)

    # then it is the v2 payload, and the stored payload was not touched
    assert current == {
        "sku": "A",
        "name": "A",
        "quantity": 1,
        "unit_price": unit_price,
        "currency": currency,
    }
    assert v1 == original


def test_current_version_is_not_upcast():
    data = item()

    assert event_types.upcast("cart.item_added", 2, data) == data


def test_v1_events_are_stored_as_posted_and_read_back_upcast(post_events, api, store, v1_batch):
    # when v1 events are posted (a EUR cart and a JPY cart)
    response = api.post("/api/v1/events", v1_batch, format="json")

    # then they are stored at schema version 1 with the payload exactly as posted
    assert response.status_code == 201, response.json()
    rows = {row.cart: row for row in CartEvent.objects.filter(store=store)}
    assert set(rows) == {"v1-eur", "v1-jpy"}
    for posted in v1_batch["events"]:
        row = rows[posted["cart"]]
        assert (str(row.event_id), row.type, row.schema_version) == (
            posted["id"],
            "cart.item_added",
            1,
        )
        assert row.data == posted["data"]

    # and the history API shows them upcast to the current version
    eur = api.get("/api/v1/carts/v1-eur/events").json()["events"]
    jpy = api.get("/api/v1/carts/v1-jpy/events").json()["events"]
    assert [(e["schema_version"], e["data"]) for e in eur] == [
        (
            2,
            {
                "sku": "MUG-01",
                "name": "Enamel mug",
                "quantity": 2,
                "unit_price": 1299,
                "currency": "EUR",
            },
        )
    ]
    assert [(e["schema_version"], e["data"]) for e in jpy] == [
        (
            2,
            {
                "sku": "TEA-7",
                "name": "Sencha, 100 g",
                "quantity": 1,
                "unit_price": 1500,
                "currency": "JPY",
            },
        )
    ]

    # and the cart state was folded from the upcast payloads
    eur_cart = CartState.objects.get(store=store, token="v1-eur")
    jpy_cart = CartState.objects.get(store=store, token="v1-jpy")
    assert (eur_cart.currency, eur_cart.value, eur_cart.items[0]["unit_price"]) == (
        "EUR",
        2598,
        1299,
    )
    assert (jpy_cart.currency, jpy_cart.value, jpy_cart.items[0]["unit_price"]) == (
        "JPY",
        1500,
        1500,
    )

    # and reading did not rewrite the stored rows
    for posted in v1_batch["events"]:
        row = CartEvent.objects.get(store=store, event_id=posted["id"])
        assert (row.schema_version, row.data) == (1, posted["data"])


def test_v1_redelivery_is_a_duplicate(api, store, v1_batch):
    # given the v1 events were posted
    api.post("/api/v1/events", v1_batch, format="json")

    # when they are delivered again
    again = api.post("/api/v1/events", v1_batch, format="json")

    # then nothing new is stored
    assert again.status_code == 200
    assert [e["duplicate"] for e in again.json()["events"]] == [True, True]
    assert CartEvent.objects.filter(store=store).count() == 2


def test_v1_and_v2_events_of_one_cart_fold_together(post_events, api, store, v1_batch):
    # given a cart whose first item came in as v1
    api.post("/api/v1/events", {"events": v1_batch["events"][:1]}, format="json")

    # when the same sku is added again in v2
    response = post_events(
        event("cart.item_added", "v1-eur", item("MUG-01", quantity=1, unit_price=1299))
    )

    # then the line counts both, at the integer price
    assert response.status_code == 201
    row = CartState.objects.get(store=store, token="v1-eur")
    assert (row.version, row.value, row.item_count) == (2, 3897, 3)
    assert [(line["sku"], line["quantity"], line["unit_price"]) for line in row.items] == [
        ("MUG-01", 3, 1299)
    ]


@pytest.mark.parametrize(
    ("price", "error"),
    [
        ("12.9.9", "Input should be a valid decimal."),
        ("twelve", "Input should be a valid decimal."),
        ("NaN", "Input should be a finite number."),
        ("Infinity", "Input should be a finite number."),
        ("1e400", "Decimal input should have no more than 16 digits in total."),
        ("1.23456", "Decimal input should have no more than 4 decimal places."),
        ("-1", "Input should be greater than or equal to 0."),
        (True, "Decimal input should be an integer, float, string or Decimal object."),
    ],
)
def test_v1_event_with_an_unreadable_price_is_refused(post_events, store, price, error):
    # given a v1 event whose price is not a decimal
    body = event(
        "cart.item_added",
        data={"sku": "A", "name": "A", "quantity": 1, "price": price, "currency": "EUR"},
        schema_version=1,
    )

    # when it is posted
    response = post_events(body)

    # then it is a 400 on the payload, and nothing is stored
    assert response.status_code == 400
    assert response.json() == {"data": {"price": [error]}}
    assert CartEvent.objects.filter(store=store).count() == 0


def test_v1_event_without_a_price_is_refused(post_events, store):
    body = event(
        "cart.item_added",
        data={"sku": "A", "name": "A", "quantity": 1, "currency": "EUR"},
        schema_version=1,
    )

    response = post_events(body)

    assert response.status_code == 400
    assert response.json() == {"data": {"price": ["Field required."]}}
    assert CartEvent.objects.filter(store=store).count() == 0
