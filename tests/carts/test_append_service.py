"""The one append service: idempotency, optimistic concurrency, all-or-nothing batches, versions."""

from __future__ import annotations

import dataclasses

import pytest
from django.db import DatabaseError, connection

from carts import projections, services
from carts.errors import EventIdConflict, EventRejected, VersionConflict
from carts.models import CartEvent, CartState
from carts.sources import Source
from tests.conftest import item, new_event


def append(store, *events):
    return services.events_append(
        store_id=store.pk, events=list(events), source=Source.server("test")
    )


def stored(store) -> list[tuple[str, int, str]]:
    """(cart, version, type) of the store's events, in log order."""
    return list(
        CartEvent.objects.filter(store=store)
        .order_by("position")
        .values_list("cart", "version", "type")
    )


def state(store, cart: str = "cart-1") -> tuple[int, int, int, str]:
    row = CartState.objects.get(store=store, token=cart)
    return row.version, row.value, row.item_count, row.status


# Versions and cart state -----------------------------------------------------------------------


def test_versions_count_1_2_3_per_cart(store):
    # given events for two carts, interleaved across a batch and single appends
    first = append(
        store,
        new_event("cart.item_added", "a", item("X")),
        new_event("cart.item_added", "b", item("Y")),
        new_event("cart.item_added", "a", item("Z")),
    )

    # when more arrive for each cart
    second = append(store, new_event("checkout.started", "a"))
    third = append(store, new_event("checkout.started", "b"))

    # then each cart counts its own versions from 1, and positions grow in append order
    assert [(r.cart, r.version, r.duplicate) for r in first + second + third] == [
        ("a", 1, False),
        ("b", 1, False),
        ("a", 2, False),
        ("a", 3, False),
        ("b", 2, False),
    ]
    positions = [r.position for r in first + second + third]
    assert positions == sorted(positions)
    assert len(set(positions)) == 5
    assert stored(store) == [
        ("a", 1, "cart.item_added"),
        ("b", 1, "cart.item_added"),
        ("a", 2, "cart.item_added"),
        ("a", 3, "checkout.started"),
        ("b", 2, "checkout.started"),
    ]
    assert CartState.objects.get(store=store, token="a").version == 3
    assert CartState.objects.get(store=store, token="b").version == 2


def test_cart_state_is_the_fold_of_the_appended_events(store):
    # when a cart's events are appended
    append(
        store,
        new_event("cart.item_added", data=item("A", quantity=2, unit_price=1250), at=0),
        new_event("cart.item_added", data=item("B", quantity=1, unit_price=500), at=10),
        new_event("cart.item_quantity_changed", data={"sku": "A", "quantity": 3}, at=20),
    )
    append(store, new_event("checkout.started", at=30))

    # then the stored cart state is the fold of exactly those events
    row = CartState.objects.get(store=store, token="cart-1")
    events = CartEvent.objects.filter(store=store, cart="cart-1").order_by("version")
    expected = projections.fold(services.fold_event(e) for e in events)
    assert services.cart_from_row(row) == expected
    assert (row.version, row.value, row.item_count, row.status) == (4, 4250, 4, "checkout")


def test_cart_state_is_written_in_the_same_transaction_as_the_events(store):
    # given a cart with one event
    append(store, new_event("cart.item_added", data=item(quantity=1, unit_price=1000)))
    assert state(store) == (1, 1000, 1, "active")

    # when the database refuses the event insert, after the cart state was updated
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'disk full'; END $$;
            CREATE TRIGGER test_disk_full BEFORE INSERT ON carts_cartevent
                FOR EACH ROW EXECUTE FUNCTION test_disk_full();
            """
        )
    with pytest.raises(DatabaseError, match="disk full"):
        append(store, new_event("cart.item_added", data=item("B", quantity=5, unit_price=100)))
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER test_disk_full ON carts_cartevent")

    # then the cart state update was rolled back with it
    assert state(store) == (1, 1000, 1, "active")
    assert stored(store) == [("cart-1", 1, "cart.item_added")]


# Idempotency -----------------------------------------------------------------------------------


def test_same_id_and_body_is_a_duplicate_that_stores_nothing(store):
    # given an appended event, and another event after it
    original = new_event("cart.item_added", data=item(quantity=2, unit_price=700))
    [first] = append(store, original)
    append(store, new_event("checkout.started"))

    # when the same event is delivered again
    [again] = append(store, original)

    # then it reports the original version and position, and nothing is stored or folded
    assert again == services.Appended(
        original.event_id, "cart-1", first.version, first.position, True, first.store_position
    )
    assert first.duplicate is False
    assert stored(store) == [("cart-1", 1, "cart.item_added"), ("cart-1", 2, "checkout.started")]
    assert state(store) == (2, 1400, 2, "checkout")


def test_a_duplicate_next_to_a_new_event_stores_only_the_new_one(store):
    # given an appended event
    original = new_event("cart.item_added", data=item("A"))
    [first] = append(store, original)

    # when it is redelivered in a batch with a new event
    again, fresh = append(store, original, new_event("cart.item_added", data=item("B")))

    # then the duplicate reports the original, and only the new event is stored
    assert (again.version, again.position, again.duplicate) == (1, first.position, True)
    assert (fresh.version, fresh.duplicate) == (2, False)
    assert fresh.position > first.position
    assert stored(store) == [("cart-1", 1, "cart.item_added"), ("cart-1", 2, "cart.item_added")]


def test_same_id_with_another_body_is_a_conflict_and_stores_nothing(store):
    # given an appended event
    original = new_event("cart.item_added", data=item(quantity=1))
    append(store, original)

    # when its id comes back with another body, in a batch after a valid new event
    changed = dataclasses.replace(original, data=item(quantity=5))
    with pytest.raises(EventIdConflict) as conflict:
        append(store, new_event("checkout.started"), changed)

    # then the conflict names the id, and nothing of the batch is stored
    assert conflict.value.detail == {"event_id": str(original.event_id)}
    assert stored(store) == [("cart-1", 1, "cart.item_added")]
    assert state(store) == (1, 1000, 1, "active")


def test_same_id_for_another_cart_is_a_conflict(store):
    # given an appended event for cart-1
    original = new_event("cart.item_added", data=item())
    append(store, original)

    # when the same id and payload arrive for another cart
    with pytest.raises(EventIdConflict):
        append(store, dataclasses.replace(original, cart="cart-2"))

    # then nothing is stored for the other cart
    assert stored(store) == [("cart-1", 1, "cart.item_added")]
    assert not CartState.objects.filter(store=store, token="cart-2").exists()


def test_event_ids_are_unique_per_store_not_globally(store):
    # given an event appended to one store
    other = services.store_create(name="Other shop")
    shared = new_event("cart.item_added", data=item())
    append(store, shared)

    # when another store appends an event with the same id
    [result] = services.events_append(
        store_id=other.store_id, events=[shared], source=Source.server("test")
    )

    # then it is a new event there
    assert (result.version, result.duplicate) == (1, False)
    assert CartEvent.objects.filter(event_id=shared.event_id).count() == 2


def test_duplicate_within_one_batch_is_stored_once(store):
    # given one event listed twice in a batch, around another
    twice = new_event("cart.item_added", data=item(quantity=1, unit_price=300))

    # when the batch is appended
    first, middle, repeat = append(store, twice, new_event("checkout.started"), twice)

    # then the repeat reports the first occurrence, and the item is counted once
    assert (first.version, first.duplicate) == (1, False)
    assert (middle.version, middle.duplicate) == (2, False)
    assert (repeat.version, repeat.position, repeat.duplicate) == (1, first.position, True)
    assert stored(store) == [("cart-1", 1, "cart.item_added"), ("cart-1", 2, "checkout.started")]
    assert state(store) == (2, 300, 1, "checkout")


def test_same_id_twice_in_a_batch_with_different_bodies_is_a_conflict(store):
    # given a batch that repeats an id with another body
    one = new_event("cart.item_added", data=item(quantity=1))
    other = dataclasses.replace(one, data=item(quantity=2))

    # when it is appended
    with pytest.raises(EventIdConflict, match="appears twice in this request"):
        append(store, one, other)

    # then nothing is stored and no cart is created
    assert stored(store) == []
    assert not CartState.objects.filter(store=store).exists()


# expected_version ------------------------------------------------------------------------------


def test_expected_version_that_matches_is_appended(store):
    # given a cart at version 1
    append(store, new_event("cart.item_added", data=item()))

    # when an event expects version 1, and a new cart's event expects version 0
    [result, new_cart] = append(
        store,
        new_event("checkout.started", expected_version=1),
        new_event("cart.item_added", "cart-2", item(), expected_version=0),
    )

    # then both are appended
    assert (result.version, result.duplicate) == (2, False)
    assert (new_cart.version, new_cart.duplicate) == (1, False)
    assert state(store) == (2, 1000, 1, "checkout")


def test_expected_version_mismatch_stores_nothing_from_the_batch(store):
    # given a cart at version 2
    append(
        store,
        new_event("cart.item_added", data=item(quantity=1, unit_price=1000)),
        new_event("cart.item_added", data=item("B", quantity=1, unit_price=200)),
    )

    # when a batch has a valid event for another cart, then one that expects a stale version
    with pytest.raises(VersionConflict) as conflict:
        append(
            store,
            new_event("cart.item_added", "cart-2", item()),
            new_event("checkout.started", expected_version=1),
        )

    # then the conflict reports both versions, and nothing of the batch is stored
    assert conflict.value.detail == {"cart": "cart-1", "expected_version": 1, "actual_version": 2}
    assert stored(store) == [("cart-1", 1, "cart.item_added"), ("cart-1", 2, "cart.item_added")]
    assert state(store) == (2, 1200, 2, "active")
    assert not CartState.objects.filter(store=store, token="cart-2").exists()


def test_expected_version_counts_events_earlier_in_the_same_batch(store):
    # when a batch's second event expects the version the first one produced, and a third does not
    with pytest.raises(VersionConflict) as conflict:
        append(
            store,
            new_event("cart.item_added", data=item(), expected_version=0),
            new_event("checkout.started", expected_version=1),
            new_event("checkout.started", expected_version=1),
        )

    # then the third conflicts (the cart would be at 2) and nothing is stored
    assert conflict.value.detail["actual_version"] == 2
    assert stored(store) == []


def test_redelivery_with_a_now_stale_expected_version_is_still_a_duplicate(store):
    # given an event appended with expected_version 0, and the cart moved on since
    original = new_event("cart.item_added", data=item(), expected_version=0)
    [first] = append(store, original)
    append(store, new_event("checkout.started"))

    # when the client retries it, unchanged
    [again] = append(store, original)

    # then it is the duplicate it is, not a version conflict, and nothing is stored
    assert (again.version, again.position, again.duplicate) == (1, first.position, True)
    assert stored(store) == [("cart-1", 1, "cart.item_added"), ("cart-1", 2, "checkout.started")]


# All or nothing --------------------------------------------------------------------------------


def test_one_rejected_event_in_the_middle_of_a_batch_stores_nothing(store):
    # given a cart with one item
    append(store, new_event("cart.item_added", data=item(quantity=1, unit_price=1000)))

    # when a batch has valid events around one that cannot apply (a sku not in the cart)
    with pytest.raises(EventRejected) as rejected:
        append(
            store,
            new_event("cart.item_added", data=item("B", quantity=1, unit_price=500)),
            new_event("cart.item_quantity_changed", data={"sku": "NOPE", "quantity": 2}),
            new_event("checkout.started"),
        )

    # then the error points at it, and nothing of the batch is stored or folded
    assert (rejected.value.index, rejected.value.field) == (1, "sku")
    assert stored(store) == [("cart-1", 1, "cart.item_added")]
    assert state(store) == (1, 1000, 1, "active")


def test_item_in_another_currency_than_the_cart_is_rejected(store):
    # given a cart in EUR
    append(store, new_event("cart.item_added", data=item(currency="EUR")))

    # when an item in USD is added
    with pytest.raises(EventRejected) as rejected:
        append(store, new_event("cart.item_added", data=item("B", currency="USD")))

    # then it is rejected on the currency field and nothing is stored
    assert (rejected.value.index, rejected.value.field) == (0, "currency")
    assert rejected.value.message == "Cart is in EUR; this event is in USD."
    assert stored(store) == [("cart-1", 1, "cart.item_added")]
    row = CartState.objects.get(store=store, token="cart-1")
    assert (row.currency, row.version, row.value) == ("EUR", 1, 1000)


def test_currency_mismatch_inside_one_batch_stores_nothing(store):
    # when one batch adds a EUR item then a USD item to a new cart
    with pytest.raises(EventRejected) as rejected:
        append(
            store,
            new_event("cart.item_added", data=item("A", currency="EUR")),
            new_event("cart.item_added", data=item("B", currency="USD")),
        )

    # then the second is rejected and neither is stored
    assert (rejected.value.index, rejected.value.field) == (1, "currency")
    assert stored(store) == []
    assert not CartState.objects.filter(store=store).exists()


def test_body_hash_is_the_sha256_of_the_canonical_body():
    # The hash decides duplicate versus conflict for events already stored: it must not drift.
    import hashlib
    import json
    import uuid
    from datetime import UTC, datetime, timedelta, timezone

    event = services.NewEvent(
        event_id=uuid.uuid4(),
        cart='c-ü"1\n',
        type="cart.item_added",
        schema_version=2,
        occurred_at=datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
        data={"b": 1, "a": ["x", {"z": 1, "y": "é"}]},
        shopper={"id": "u", "email": "a@b.example"},
    )
    body = {
        "cart": event.cart,
        "type": event.type,
        "schema_version": 2,
        "occurred_at": "2026-01-01T10:00:00+00:00",
        "data": event.data,
        "shopper": event.shopper,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    assert event.body_hash() == hashlib.sha256(canonical.encode()).hexdigest()
    assert (
        dataclasses.replace(event, shopper=None).body_hash()
        == hashlib.sha256(
            json.dumps({**body, "shopper": None}, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
    )
    assert event.occurred_at.astimezone(UTC).hour == 10
