"""``CartState.seen_at``: when the server recorded the cart's latest shopper activity (the append's
time, stored as each event's ``recorded_at``), beside ``last_activity_at`` (the shopper's clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import connection

from carts import projections, services
from carts.models import CartEvent, CartState
from carts.projections import FoldEvent
from carts.projectors import cart_state_rebuild
from carts.sources import Source
from tests.conftest import item, new_event

T = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ADD = {"sku": "A", "name": "A", "quantity": 1, "unit_price": 100, "currency": "EUR"}


def test_the_fold_keeps_the_latest_record_time_of_shopper_activity():
    cart = projections.fold(
        [
            FoldEvent("cart.item_added", ADD, T, recorded_at=T + timedelta(hours=2)),
            # Older activity recorded later (a webhook retried, an offline app syncing).
            FoldEvent(
                "page.viewed", {}, T - timedelta(hours=1), recorded_at=T + timedelta(hours=3)
            ),
            # System events are not the shopper's activity.
            FoldEvent("campaign.enrolled", {}, T, recorded_at=T + timedelta(hours=4)),
            # Never recorded (a simulation): no server time.
            FoldEvent("page.viewed", {}, T + timedelta(minutes=1)),
        ]
    )
    assert (cart.last_activity_at, cart.seen_at) == (
        T + timedelta(minutes=1),
        T + timedelta(hours=3),
    )


def _append(store, *events, now=None):
    services.events_append(
        store_id=store.pk, events=list(events), source=Source.server("test"), now=now
    )


def test_an_append_records_its_time_as_recorded_at_and_seen_at(store):
    # without a time of its own: the database's clock, the transaction's
    _append(store, new_event("cart.item_added", data=item(), at=T))
    [event] = CartEvent.objects.filter(store=store)
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        [(db_now,)] = cursor.fetchall()
    assert event.recorded_at == db_now
    state = CartState.objects.get(store=store)
    assert (state.last_activity_at, state.seen_at) == (T, db_now)

    # with one (tests, benchmarks): that time; older activity arriving late moves seen_at only
    _append(store, new_event("cart.item_added", "cart-2", item(), at=T), now=T)
    later = T + timedelta(days=3)
    view = {"url": "/", "page_type": "home"}
    _append(store, new_event("page.viewed", "cart-2", view, at=T - timedelta(hours=1)), now=later)
    assert CartEvent.objects.get(store=store, cart="cart-2", version=2).recorded_at == later
    state = CartState.objects.get(store=store, token="cart-2")
    assert (state.last_activity_at, state.seen_at) == (T, later)


def test_rebuilt_seen_at_equals_live(store):
    # given carts appended at several server times, one by the database's clock
    _append(store, new_event("cart.item_added", "c-1", item(), at=T), now=T)
    _append(
        store,
        new_event("page.viewed", "c-1", {"url": "/", "page_type": "home"}, at=T),
        now=T + timedelta(hours=5),
    )
    _append(store, new_event("cart.item_added", "c-2", item(), at=T + timedelta(days=1)))
    live = {s.token: services.cart_from_row(s) for s in CartState.objects.filter(store=store)}
    assert live["c-1"].seen_at == T + timedelta(hours=5)

    # when the cart state is damaged and rebuilt from the log
    CartState.objects.filter(store=store).update(seen_at=None)
    cart_state_rebuild()

    # then every state is what the appends left, seen_at included
    rebuilt = {s.token: services.cart_from_row(s) for s in CartState.objects.filter(store=store)}
    assert rebuilt == live
