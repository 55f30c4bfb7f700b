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
