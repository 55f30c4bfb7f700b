"""The live dashboard: the ``dashboard_live`` projector's pushes and the dashboard websocket,
against the real database and the Redis channel layer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

from carts import channel_push, projectors
from carts.models import CartEvent, CartState, Store, StoreMember
from carts.services import events_append, store_create
from carts.sources import Source
from config.asgi import application
from dashboards import live
from recovery import live as recovery_live
from tests.conftest import item, new_event

ORIGIN = "http://localhost"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


# Pure: which events are pushed -------------------------------------------------------------------


def _event(type: str, data: dict, *, recorded: datetime, store_id: int = 1) -> CartEvent:
    return CartEvent(
        position=7,
        store_id=store_id,
        cart="c-1",
        version=1,
        type=type,
        data=data,
        occurred_at=recorded - timedelta(seconds=1),
        recorded_at=recorded,
    )


def test_frames_show_recent_events_of_the_live_types_without_personal_data():
    events = [
        _event("shopper.exit_intent", {"trigger": "idle"}, recorded=NOW),
        _event("checkout.contact_captured", {"email": "ada@example.com"}, recorded=NOW),
        _event("page.viewed", {"url": "https://shop/x?email=a", "page_type": "cart"}, recorded=NOW),
        _event("campaign.enrolled", {"campaign": 1}, recorded=NOW),  # not a live type
        _event(
            "recovery.offer_decided",
            {
                "decision": "offer",
                "reason": "eligible",
                "score": 0.8,
                "holdout": False,
                "campaign": 3,
                "tier": 4,
                "model_version": "m",
                "offer": {"id": "o-1", "kind": "free_shipping", "discount_code": "SECRET"},
            },
            recorded=NOW,
            store_id=2,
        ),
    ]

    frames = live.frames_by_store(events, now=NOW + timedelta(seconds=5))

    at = (NOW - timedelta(seconds=1)).isoformat()
    base = {"type": "event", "position": 7, "cart": "c-1", "occurred_at": at}
    assert frames == {
        1: [
            {**base, "event": "shopper.exit_intent", "data": {"trigger": "idle"}},
            {**base, "event": "checkout.contact_captured", "data": {}},
            {**base, "event": "page.viewed", "data": {"page_type": "cart"}},
        ],
        2: [
            {
                **base,
                "event": "recovery.offer_decided",
                "data": {
                    "decision": "offer",
                    "reason": "eligible",
                    "score": 0.8,
                    "holdout": False,
                    "campaign": 3,
                    "tier": 4,
                    "offer_kind": "free_shipping",
                    "offer_id": "o-1",
                },
            }
        ],
    }


def test_events_recorded_before_the_live_window_are_not_pushed():
    old = _event("shopper.exit_intent", {"trigger": "idle"}, recorded=NOW - live.MAX_AGE)
    recent = _event("order.placed", {"order_id": "1", "total": 5, "currency": "EUR"}, recorded=NOW)
    frames = live.frames_by_store([old, recent], now=NOW + timedelta(seconds=1))
    assert [f["event"] for f in frames[1]] == ["order.placed"]
    assert live.frames_by_store([old], now=NOW + timedelta(seconds=1)) == {}


def test_a_burst_sends_only_the_latest_events_of_a_store():
    events = [
        _event("cart.item_added", {"sku": f"S-{n}", "quantity": 1}, recorded=NOW)
        for n in range(live.MAX_EVENTS_PER_MESSAGE + 5)
    ]
    frames = live.frames_by_store(events, now=NOW)[1]
    assert len(frames) == live.MAX_EVENTS_PER_MESSAGE
    assert frames[0]["data"]["sku"] == "S-5" and frames[-1]["data"]["sku"] == "S-204"


# The socket --------------------------------------------------------------------------------------


def make_marketer(*, role: str = StoreMember.Role.MARKETER) -> dict:
    creds = store_create(name=f"Live shop {uuid.uuid4().hex[:6]}")
    store = Store.objects.get(pk=creds.store_id)
    user = User.objects.create_user(username=f"m-{uuid.uuid4().hex[:8]}", password="pw-123456")
    StoreMember.objects.create(store=store, user=user, role=role)
    client = Client()
    client.force_login(user)
    return {"store": store, "user": user, "cookie": client.cookies[settings.SESSION_COOKIE_NAME]}


marketer = sync_to_async(make_marketer)


@sync_to_async
def other_store() -> Store:
    return Store.objects.get(pk=store_create(name=f"Other {uuid.uuid4().hex[:6]}").store_id)


@sync_to_async
def append(store_id: int, type: str, data: dict, cart: str = "c-live") -> None:
    events_append(
        store_id=store_id,
        events=[new_event(type, cart, data, at=datetime.now(UTC))],
        source=Source.server("test"),
    )


@sync_to_async
def exit_intent(store_id: int, cart: str) -> None:
    """As the shopper socket does it: the exit intent and its offer decision in one commit."""
    raw = {
        "id": str(uuid.uuid4()),
        "type": "shopper.exit_intent",
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {"trigger": "mouse_leave"},
    }
    recovery_live.shopper_event_append(
        store_id=store_id, cart=cart, raw=raw, now=datetime.now(UTC), session="test"
    )


@sync_to_async
def catch_up(name: str = live.NAME) -> int:
    return projectors.projector_catch_up(name=name)


@sync_to_async
def cart_state(store_id: int, cart: str) -> CartState:
    return CartState.objects.get(store_id=store_id, token=cart)


async def open_socket(
    query: str, *, cookie: object = None, origin: str | None = ORIGIN
) -> tuple[WebsocketCommunicator, bool]:
    # A browser sends the server's Host with every handshake; the Origin must match it.
    headers = [(b"host", b"localhost")]
    if origin:
        headers.append((b"origin", origin.encode()))
    if cookie is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie.value}".encode()))  # type: ignore[attr-defined]
    communicator = WebsocketCommunicator(application, f"/ws/v1/dashboard/?{query}", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


async def connect(store_id: int, cookie: object) -> WebsocketCommunicator:
    """A marketer's socket, past its snapshot."""
    socket, connected = await open_socket(f"store={store_id}", cookie=cookie)
    assert connected
    assert (await socket.receive_json_from(timeout=5))["type"] == "snapshot"
    return socket


async def closed_with(socket: WebsocketCommunicator) -> object:
    """The close code the server sent; the consumer is then ended (a consumer left listening on
    the channel layer holds up the test's event loop when it closes)."""
    code = (await socket.receive_output(timeout=5)).get("code")
    await socket.disconnect()
    return code


@pytest.mark.asyncio
async def test_not_logged_in_is_closed_with_4401(committed_db):
    m = await marketer()
    socket, connected = await open_socket(f"store={m['store'].pk}")
    assert connected
    assert await closed_with(socket) == 4401


@pytest.mark.asyncio
async def test_another_store_or_none_is_closed_with_4403_or_4400(committed_db):
    m = await marketer()
    other = await other_store()
    for query, code in (
        (f"store={other.pk}", 4403),
        ("store=999999999", 4403),  # no such store: the same answer
        ("", 4400),
        ("store=abc", 4400),
    ):
        socket, connected = await open_socket(query, cookie=m["cookie"])
        assert connected
        assert await closed_with(socket) == code, query


@pytest.mark.asyncio
async def test_a_foreign_origin_is_refused_at_the_handshake(committed_db):
    m = await marketer()
    for origin in ("http://evil.test", None):
        socket, connected = await open_socket(
            f"store={m['store'].pk}", cookie=m["cookie"], origin=origin
        )
        assert not connected
        await socket.disconnect()  # end the application instance, or the loop waits for it


@pytest.mark.asyncio
async def test_the_snapshot_lists_the_stores_active_carts(committed_db):
    m = await marketer()
    store_id = m["store"].pk
    await append(store_id, "cart.item_added", item(unit_price=2500, quantity=2), cart="c-snap")
    await append((await other_store()).pk, "cart.item_added", item(), cart="c-elsewhere")
    await catch_up("dashboard")
    state = await cart_state(store_id, "c-snap")

    socket, connected = await open_socket(f"store={store_id}", cookie=m["cookie"])
    assert connected
    snapshot = await socket.receive_json_from(timeout=5)

    assert snapshot["type"] == "snapshot" and snapshot["store"] == store_id
    assert [c["cart"] for c in snapshot["carts"]] == ["c-snap"]
    cart = snapshot["carts"][0]
    assert (cart["value"], cart["currency"], cart["item_count"]) == (5000, "EUR", 2)
    assert cart["score"] == state.score
    assert (cart["exit_intents"], cart["offers_shown"], cart["offers_accepted"]) == (0, 0, 0)
    await socket.send_json_to({"type": "ping"})
    assert (await socket.receive_json_from(timeout=5))["type"] == "pong"
    await socket.disconnect()


@pytest.mark.asyncio
async def test_an_exit_intent_reaches_its_stores_sockets_and_no_other(committed_db):
    m = await marketer()
    n = await marketer(role=StoreMember.Role.MERCHANT)  # merchants may watch too
    store_id, other_id = m["store"].pk, n["store"].pk
    await append(store_id, "cart.item_added", item(unit_price=4000), cart="c-exit")
    await append(other_id, "cart.item_added", item(), cart="c-other")
    await catch_up()
    mine = await connect(store_id, m["cookie"])
    theirs = await connect(other_id, n["cookie"])

    await exit_intent(store_id, "c-exit")
    assert await catch_up() == 2  # the exit intent and its decision

    state = await cart_state(store_id, "c-exit")
    summary = {
        "score": state.score,
        "value": 4000,
        "currency": "EUR",
        "item_count": 1,
        "status": "active",
        "last_activity_at": state.last_activity_at.isoformat(),
    }
    first = await mine.receive_json_from(timeout=5)
    second = await mine.receive_json_from(timeout=5)
    assert first["event"] == "shopper.exit_intent" and first["cart"] == "c-exit"
    assert first["data"] == {"trigger": "mouse_leave"}
    assert first["cart_state"] == summary and 0 < summary["score"] < 1
    assert second["event"] == "recovery.offer_decided"
    assert second["data"] == {
        "decision": "none",
        "reason": "no_campaign",
        "score": state.score,
        "holdout": False,
        "campaign": None,
        "tier": None,
    }
    assert second["position"] > first["position"]
    assert await theirs.receive_nothing(timeout=0.5)
    await mine.disconnect()
    await theirs.disconnect()


@pytest.mark.asyncio
async def test_a_rolled_back_batch_pushes_nothing_and_a_failed_push_fails_nothing(
    committed_db, monkeypatch, caplog
):
    m = await marketer()
    store_id = m["store"].pk
    await catch_up()
    socket = await connect(store_id, m["cookie"])
    await append(store_id, "cart.item_added", item(), cart="c-rb")

    @sync_to_async
    def apply_then_roll_back() -> None:
        events = list(CartEvent.objects.filter(store_id=store_id, cart="c-rb"))
        with pytest.raises(RuntimeError), transaction.atomic():
            live.apply(events)
            raise RuntimeError("the checkpoint did not commit")

    await apply_then_roll_back()
    assert await socket.receive_nothing(timeout=0.5)

    def broken(*args, **kwargs):
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(channel_push.SENDER, "send", broken)
    assert await catch_up() == 1  # applied and checkpointed all the same
    assert "pushing 1 stores' live events failed" in caplog.text
    assert await socket.receive_nothing(timeout=0.3)
    await socket.disconnect()


# The page ----------------------------------------------------------------------------------------


def test_the_live_page_needs_a_login_and_shows_only_the_users_stores(db):
    m = make_marketer()
    other = Store.objects.get(pk=store_create(name="Someone else's").store_id)
    url = f"/dashboard/{m['store'].pk}/live/"

    anonymous = Client().get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"] == f"/dashboard/login/?next={url}"

    client = Client()
    client.force_login(m["user"])
    assert client.get(f"/dashboard/{other.pk}/live/").status_code == 404
    assert client.get("/dashboard/999999999/live/").status_code == 404
    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert (
        f'<script src="/static/dashboards/live.js" data-store="{m["store"].pk}" '
        'data-ws-path="/ws/v1/dashboard/" data-window-seconds="1800" data-locale="" defer></script>'
    ) in html
    assert 'id="live-carts"' in html and 'id="live-feed"' in html
    assert f'<a href="{url}" aria-current="page">Live</a>' in html
    assert client.get("/static/dashboards/live.js").status_code == 200
