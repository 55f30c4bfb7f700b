"""Provenance (issue 11): every event records its source; only trusted sources place orders,
refund them or set contact details a browser cannot replace; every reader agrees on the order."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async as sync_to_async

from carts import projectors, services
from carts.models import CartEvent, CartState
from carts.sources import Source, browser_event_id
from dashboards.models import CartFact, DailyCount
from tests.conftest import item, new_event
from tests.log_sql import event_inject
from tests.recovery.test_shopper_socket import hello, log_types, send_event, shop


def _now_event(type_: str, cart: str, data: dict) -> services.NewEvent:
    event = new_event(type_, cart, data)
    return services.NewEvent(**{**_fields(event), "occurred_at": datetime.now(UTC)})


def _fields(event: services.NewEvent) -> dict:
    return {name: getattr(event, name) for name in event.__slots__}


def test_the_http_api_records_the_server_and_its_key_and_returns_them(api, credentials):
    body = {
        "id": str(uuid.uuid4()),
        "cart": "prov-1",
        "type": "cart.item_added",
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": item(),
    }
    assert api.post("/api/v1/events", body, format="json").status_code == 201

    stored = CartEvent.objects.get(store_id=credentials.store_id, cart="prov-1")
    assert (stored.source, stored.source_ref) == ("server", credentials.secret_key[:10])
    [listed] = api.get("/api/v1/carts/prov-1/events").json()["events"]
    assert (listed["source"], listed["source_ref"]) == ("server", credentials.secret_key[:10])


def test_the_same_event_id_from_another_kind_of_source_is_a_conflict(store):
    event = new_event("page.viewed", "prov-2", {"url": "/", "page_type": "home"})
    services.events_append(store_id=store.pk, events=[event], source=Source.browser("s1"))
    # The same browser again (another session): a duplicate.
    [again] = services.events_append(store_id=store.pk, events=[event], source=Source.browser("s2"))
    assert again.duplicate

    with pytest.raises(services.EventIdConflict):
        services.events_append(store_id=store.pk, events=[event], source=Source.server("sk_x"))


ORDER = {"order_id": "o-1", "total": 1000, "currency": "EUR"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("type_", "data"),
    [("order.placed", ORDER), ("order.refunded", {"order_id": "o-1", "amount": 1000})],
)
async def test_a_browser_cannot_send_orders_or_refunds(committed_db, type_, data):
    s = await shop()
    socket = await hello(s["store"].pk, "prov-order")
    await send_event(socket, "cart.item_added", item())

    frames = await send_event(socket, type_, data)

    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "invalid_event"
    assert "cannot be sent from a browser" in json.dumps(frames[-1]["errors"])
    assert [t for t, _ in await log_types(s["store"].pk, "prov-order")] == ["cart.item_added"]
    await socket.disconnect()


@pytest.mark.asyncio
async def test_browser_events_record_their_session(committed_db):
    s = await shop()
    socket = await hello(s["store"].pk, "prov-session")
    await send_event(socket, "cart.item_added", item())
    await socket.disconnect()

    stored = await sync_to_async(CartEvent.objects.get)(store_id=s["store"].pk, cart="prov-session")
    assert stored.source == "browser" and len(stored.source_ref) >= 8


@pytest.mark.asyncio
async def test_a_browser_cannot_replace_the_contact_the_server_gave(committed_db):
    s = await shop()
    store_id = s["store"].pk
    contact = {"email": "ada@example.com", "consent": {"email": True}}
    await sync_to_async(services.events_append)(
        store_id=store_id,
        events=[_now_event("checkout.contact_captured", "prov-contact", contact)],
        source=Source.server("sk_test"),
    )
    socket = await hello(store_id, "prov-contact")

    frames = await send_event(
        socket,
        "checkout.contact_captured",
        {"email": "attacker@example.net", "consent": {"email": True}},
    )

    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "event_rejected"
    state = await sync_to_async(CartState.objects.get)(store_id=store_id, token="prov-contact")
    assert (state.email, state.contact_source) == ("ada@example.com", "server")
    assert [t for t, _ in await log_types(store_id, "prov-contact")] == [
        "checkout.contact_captured"
    ]
    await socket.disconnect()


def _inject(store_id: int, cart: str, version: int, type_: str, data: dict, source: str) -> None:
    """An event as an older version of the service would have accepted it (raw SQL)."""
    at = datetime.now(UTC) - timedelta(minutes=5)
    event_inject(store_id, cart, type_, data, version=version, occurred_at=at, source=source)


def test_a_server_order_after_a_browser_order_hint_converts_the_cart_and_counts_once(api, store):
    cart = "prov-hint"
    services.events_append(
        store_id=store.pk, events=[_now_event("cart.item_added", cart, item())],
        source=Source.server("sk_test"),
    )  # fmt: skip
    # A browser "order" in the log (accepted before provenance was enforced): a 1-cent order.
    _inject(store.pk, cart, 2, "order.placed", {"order_id": "FAKE", "total": 1, "currency": "EUR"},
            "browser")  # fmt: skip
    projectors.rebuild("cart_state")
    assert CartState.objects.get(store_id=store.pk, token=cart).status != "converted"

    real = {"order_id": "REAL-77", "total": 6000, "currency": "EUR"}
    services.events_append(
        store_id=store.pk, events=[_now_event("order.placed", cart, real)],
        source=Source.server("sk_test"),
    )  # fmt: skip
    for name in projectors.REGISTRY:
        projectors.projector_catch_up(name=name)

    body = api.get(f"/api/v1/carts/{cart}").json()
    assert (body["status"], body["order_id"], body["order_total"]) == ("converted", "REAL-77", 6000)
    fact = CartFact.objects.get(store_id=store.pk, cart=cart)
    assert fact.order_total == body["order_total"]
    orders = DailyCount.objects.filter(store_id=store.pk, metric="orders", hourly=False)
    assert [(o.count, o.amount) for o in orders] == [(1, 6000)]
    # The rebuilt dashboards agree as well.
    projectors.rebuild("dashboard")
    orders = DailyCount.objects.filter(store_id=store.pk, metric="orders", hourly=False)
    assert [(o.count, o.amount) for o in orders] == [(1, 6000)]


def test_refunds_in_the_log_count_alike_in_the_cart_api_and_the_dashboards(api, store):
    cart = "prov-refund"
    services.events_append(
        store_id=store.pk,
        events=[
            _now_event("cart.item_added", cart, item()),
            _now_event("order.placed", cart, ORDER),
        ],
        source=Source.server("sk_test"),
    )
    _inject(store.pk, cart, 3, "order.refunded", {"order_id": "o-1", "amount": 1000}, "browser")
    # Older versions accepted these too; both readers refuse them whole, alike.
    _inject(store.pk, cart, 4, "order.refunded", {"order_id": "o-1", "amount": 5000}, "unknown")
    usd = {"order_id": "o-1", "amount": 400, "currency": "USD"}
    _inject(store.pk, cart, 5, "order.refunded", usd, "unknown")
    _inject(store.pk, cart, 6, "order.refunded", {"order_id": "o-1", "amount": 300}, "unknown")
    projectors.rebuild("cart_state")
    projectors.rebuild("dashboard")

    assert api.get(f"/api/v1/carts/{cart}").json()["refunded"] == 300
    assert CartFact.objects.get(store_id=store.pk, cart=cart).refunded == 300
    orders = DailyCount.objects.filter(store_id=store.pk, metric="orders", hourly=False)
    assert [(o.count, o.amount) for o in orders] == [(1, 700)]


@pytest.mark.asyncio
async def test_a_browser_cannot_take_an_event_id_the_server_or_the_system_will_use(committed_db):
    s = await shop()
    store_id = s["store"].pk
    socket = await hello(store_id, "prov-ids")
    taken = uuid.uuid4()  # say, the id a campaign step's event will have
    message = {
        "type": "event",
        "event": {
            "id": str(taken),
            "type": "page.viewed",
            "occurred_at": datetime.now(UTC).isoformat(),
            "data": {"url": "/", "page_type": "home"},
        },
    }
    await socket.send_json_to(message)
    first = await socket.receive_json_from(timeout=5)
    await socket.send_json_to(message)  # a retry
    again = await socket.receive_json_from(timeout=5)
    await socket.disconnect()

    # The browser hears about the id it sent; its retry is a duplicate.
    assert (first["type"], first["id"], first["duplicate"]) == ("appended", str(taken), False)
    assert (again["id"], again["duplicate"]) == (str(taken), True)
    stored = await sync_to_async(CartEvent.objects.get)(store_id=store_id, cart="prov-ids")
    assert stored.event_id == browser_event_id("prov-ids", taken) != taken
    # The id stays free for the server (or a system event) of another cart.
    [appended] = await sync_to_async(services.events_append)(
        store_id=store_id,
        events=[
            services.NewEvent(
                **{**_fields(_now_event("checkout.started", "victim", {})), "event_id": taken}
            )
        ],
        source=Source.server("sk_test"),
    )
    assert not appended.duplicate and appended.cart == "victim"


@pytest.mark.asyncio
async def test_a_browser_cannot_name_the_shopper(committed_db):
    s = await shop()
    socket = await hello(s["store"].pk, "prov-shopper")
    await socket.send_json_to(
        {
            "type": "event",
            "event": {
                "id": str(uuid.uuid4()),
                "type": "page.viewed",
                "occurred_at": datetime.now(UTC).isoformat(),
                "data": {"url": "/", "page_type": "home"},
                "shopper": {"id": "cust-42"},
            },
        }
    )
    frame = await socket.receive_json_from(timeout=5)
    await socket.disconnect()

    assert (frame["type"], frame["code"]) == ("error", "invalid_event")
    assert list(frame["errors"]["shopper"]) == ["id"]
    assert await log_types(s["store"].pk, "prov-shopper") == []
