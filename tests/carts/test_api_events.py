from datetime import UTC, datetime

import pytest

from carts.models import CartEvent, CartState
from tests.conftest import event, item


def test_single_event_is_appended_and_folded(post_events, store):
    response = post_events(event("cart.item_added", data=item(quantity=2, unit_price=1250)))

    assert response.status_code == 201, response.json()
    [result] = response.json()["events"]
    assert result["cart"] == "cart-1"
    assert result["version"] == 1
    assert result["duplicate"] is False
    state = CartState.objects.get(store=store, token="cart-1")
    assert state.value == 2500
    assert state.item_count == 2
    assert state.currency == "EUR"
    assert CartEvent.objects.filter(store=store).count() == 1


def test_payload_and_shopper_are_stored_cleaned_and_the_time_in_utc(post_events, store):
    # given an event with padded text, numbers as text and a time with an offset
    posted = event(
        "cart.item_added",
        data=item(
            sku=" MUG-01 ",
            name="Enamel mug",
            quantity="2",
            unit_price=1250.0,
            currency=" EUR ",
            url=" https://shop.example/p/mug-01 ",
        ),
        occurred_at="2026-11-01T14:00:00+02:00",
        shopper={"id": 42, "locale": " en-GB ", "timezone": "Europe/London"},
    )

    # when it is posted
    response = post_events(posted)

    # then it is stored cleaned, as the DRF serializers stored it
    assert response.status_code == 201, response.json()
    row = CartEvent.objects.get(store=store)
    assert row.data == {
        "sku": "MUG-01",
        "name": "Enamel mug",
        "quantity": 2,
        "unit_price": 1250,
        "currency": "EUR",
        "url": "https://shop.example/p/mug-01",
    }
    assert row.shopper == {"id": "42", "locale": "en-GB", "timezone": "Europe/London"}
    assert row.occurred_at == datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2026-11-01T12:00:00Z", datetime(2026, 11, 1, 12, 0, tzinfo=UTC)),
        ("2026-11-01T12:00:00", datetime(2026, 11, 1, 12, 0, tzinfo=UTC)),  # no offset: UTC
        ("2026-11-01 07:00:00.5-05:00", datetime(2026, 11, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-01", datetime(2026, 11, 1, 0, 0, tzinfo=UTC)),
    ],
)
def test_occurred_at_is_read_as_iso_8601(post_events, store, sent, stored):
    assert post_events(event("checkout.started", occurred_at=sent)).status_code == 201

    assert CartEvent.objects.get(store=store).occurred_at == stored


def test_an_empty_shopper_and_a_missing_payload_store_as_none_and_empty(post_events, store):
    body = event("checkout.started", shopper={})
    del body["data"]

    assert post_events(body).status_code == 201

    row = CartEvent.objects.get(store=store)
    assert (row.data, row.shopper) == ({}, None)
