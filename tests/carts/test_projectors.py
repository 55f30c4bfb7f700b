from django.core.management import call_command

from carts import projectors, services
from carts.models import CartEvent, CartState, DailyEventCount, ProjectorCheckpoint
from carts.sources import Source
from tests.conftest import item, new_event


def _log(store_id: int) -> None:
    services.events_append(
        source=Source.server("test"),
        store_id=store_id,
        events=[
            new_event("cart.item_added", "a", item("X", 2, 500), at=0),
            new_event("page.viewed", "a", {"url": "/p/x", "page_type": "product"}, at=10),
            new_event("cart.item_added", "b", item("Y", 1, 700), at=86_400),
            new_event("cart.item_quantity_changed", "a", {"sku": "X", "quantity": 3}, at=20),
            new_event("checkout.started", "a", at=30),
            new_event(
                "order.placed", "a", {"order_id": "o1", "total": 1500, "currency": "EUR"}, at=40
            ),
            new_event("order.refunded", "a", {"order_id": "o1", "amount": 500}, at=90_000),
        ],
    )


def _counts(store_id: int) -> set[tuple]:
    return set(
        DailyEventCount.objects.filter(store_id=store_id).values_list(
            "day", "type", "count", "carts"
        )
    )


def test_daily_counts_catch_up_gives_exact_figures(store):
    _log(store.pk)

    projectors.projector_catch_up(name="daily_event_counts", batch_size=3)

    day1, day2 = "2026-11-01", "2026-11-02"
    assert {(str(d), t, c, k) for d, t, c, k in _counts(store.pk)} == {
        (day1, "cart.item_added", 1, 1),
        (day1, "page.viewed", 1, 0),
        (day1, "cart.item_quantity_changed", 1, 0),
        (day1, "checkout.started", 1, 0),
        (day1, "order.placed", 1, 0),
        (day2, "cart.item_added", 1, 1),
        (day2, "order.refunded", 1, 0),
    }
    checkpoint = ProjectorCheckpoint.objects.get(name="daily_event_counts", store=store)
    assert checkpoint.position == CartEvent.objects.filter(store=store).count() == 7
    # Caught up: a second run applies nothing and changes nothing.
    assert projectors.projector_catch_up(name="daily_event_counts") == 0


def test_rebuild_equals_live_for_every_projection(store):
    _log(store.pk)
    projectors.projector_catch_up(name="daily_event_counts", batch_size=2)
    live_counts = _counts(store.pk)
    live_carts = list(CartState.objects.filter(store=store).order_by("token").values())

    call_command("rebuild_projections")

    assert _counts(store.pk) == live_counts
    assert list(CartState.objects.filter(store=store).order_by("token").values()) == live_carts


def test_rebuild_repairs_a_damaged_cart_state(store):
    _log(store.pk)
    expected = CartState.objects.get(store=store, token="a")
    CartState.objects.filter(pk=expected.pk).update(value=0, status="active", items=[])

    call_command("rebuild_projections", "cart_state")

    rebuilt = CartState.objects.get(pk=expected.pk)
    assert (rebuilt.value, rebuilt.status, rebuilt.items) == (
        expected.value,
        expected.status,
        expected.items,
    )
    assert rebuilt.status == "converted"
    assert rebuilt.refunded == 500


def test_unknown_projection_is_a_clear_error(db):
    import pytest
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Unknown projection 'nope'"):
        call_command("rebuild_projections", "nope")
