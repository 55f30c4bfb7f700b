"""The shopper websocket against the real database and the Redis channel layer."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from campaigns.models import Campaign, Tier
from carts.models import CartEvent
from carts.services import events_append, store_create, store_origins_add
from carts.sources import Source
from config.asgi import application
from recovery import cart_tokens, live, offers, serving, tickets
from tests.conftest import item, new_event

ORIGIN = "http://shop.test"
pytestmark = [pytest.mark.asyncio]


@pytest.fixture(autouse=True)
def fresh_caches(settings):
    settings.RECOVERY_MODEL_REFRESH_SECONDS = 0
    settings.RECOVERY_CAMPAIGN_REFRESH_SECONDS = 0
    serving.MODELS.clear()
    live.onsite_tiers_forget()
    yield


def make_shop(*, origin: str = ORIGIN, holdout: str = "0", cooldown: int = 24, **tier) -> dict:
    creds = store_create(name=f"Socket shop {uuid.uuid4().hex[:6]}")
    from carts.models import Store

    store = Store.objects.get(pk=creds.store_id)
    store_origins_add(store=store, origins=[origin])
    campaign = Campaign.objects.create(
        store=store, name="Exit", active=True, holdout_share=Decimal(holdout)
    )
    Tier.objects.create(
        campaign=campaign,
        min_score=0.0,
        min_cart_value=1,
        offer_kind=tier.pop("offer_kind", "percent_discount"),
        percent=tier.pop("percent", 10),
        discount_cap=tier.pop("discount_cap", 2000),
        headline="10% off if you stay",
        body="Finish now.",
        cooldown_hours=cooldown,
        **tier,
    )
    return {"store": store, "creds": creds, "campaign": campaign}


shop = sync_to_async(make_shop)


async def connect(origin: str | None = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"origin", origin.encode())] if origin else []
    communicator = WebsocketCommunicator(application, "/ws/v1/shopper/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def hello(store_id: int, cart: str, origin: str = ORIGIN) -> WebsocketCommunicator:
    communicator = await connect(origin)
    ticket = tickets.ticket_issue(store_id=store_id, cart=cart)
    await communicator.send_json_to({"type": "hello", "ticket": ticket})
    welcome = await communicator.receive_json_from(timeout=5)
    assert welcome["type"] == "welcome" and welcome["cart"] == cart
    return communicator


def ev(kind: str, data: dict | None = None, **extra) -> dict:
    return {
        "type": "event",
        "event": {
            "id": str(uuid.uuid4()),
            "type": kind,
            "occurred_at": datetime.now(UTC).isoformat(),
            "data": data or {},
            **extra,
        },
    }


async def send_event(communicator, kind: str, data: dict | None = None) -> list[dict]:
    """Send an event; the frames that answer it, in arrival order: an exit intent's offer is
    sent as soon as it is decided, before the commit, so it comes before ``appended``."""
    await communicator.send_json_to(ev(kind, data))
    frames = [await communicator.receive_json_from(timeout=5)]
    while frames[-1]["type"] not in ("appended", "error"):
        frames.append(await communicator.receive_json_from(timeout=5))
    return frames


@sync_to_async
def log_types(store_id: int, cart: str) -> list[tuple[str, dict]]:
    return list(
        CartEvent.objects.filter(store_id=store_id, cart=cart)
        .order_by("version")
        .values_list("type", "data")
    )


async def test_exit_intent_gets_an_offer_decided_in_the_same_commit(committed_db):
    s = await shop()
    socket = await hello(s["store"].pk, "cart-a")
    assert (await send_event(socket, "cart.item_added", item(unit_price=5000)))[0]["type"] == (
        "appended"
    )

    frames = await send_event(socket, "shopper.exit_intent", {"trigger": "mouse_leave"})

    assert [f["type"] for f in frames] == ["offer", "appended"]
    offer = frames[0]
    assert offer["kind"] == "percent_discount" and offer["percent"] == 10
    # The code is the cart's coupon (campaigns.coupons), issued with the decision.
    assert offer["discount_amount"] == 500 and offer["discount_code"].startswith("SAVE-")
    assert offer["headline"] == "10% off if you stay"
    log = await log_types(s["store"].pk, "cart-a")
    assert [t for t, _ in log] == [
        "cart.item_added",
        "shopper.exit_intent",
        "campaign.coupon_issued",
        "recovery.offer_decided",
    ]
    assert log[2][1]["code"] == offer["discount_code"]
    decided = log[-1][1]
    assert decided["decision"] == "offer" and decided["offer"]["id"] == offer["id"]
    assert 0 < decided["score"] < 1 and decided["model_version"] == "stock-1"
    await socket.disconnect()


async def test_holdout_gets_nothing_and_the_decision_is_recorded(committed_db):
    s = await shop(holdout="0.50")
    campaign_id = s["campaign"].pk
    cart = next(
        f"h-{n}"
        for n in range(1000)
        if offers.in_holdout(campaign_id=campaign_id, shopper=f"h-{n}", share=Decimal("0.5"))
    )
    socket = await hello(s["store"].pk, cart)
    await send_event(socket, "cart.item_added", item())
    frames = await send_event(socket, "shopper.exit_intent", {"trigger": "tab_hidden"})
    assert [f["type"] for f in frames] == ["appended"]
    decided = (await log_types(s["store"].pk, cart))[-1]
    assert decided[0] == "recovery.offer_decided"
    assert decided[1]["decision"] == "none" and decided[1]["reason"] == "holdout"
    assert decided[1]["holdout"] is True
    await socket.disconnect()


async def test_at_most_one_offer_per_cart_within_the_cooldown(committed_db):
    s = await shop(cooldown=24)
    socket = await hello(s["store"].pk, "cart-c")
    await send_event(socket, "cart.item_added", item())
    first = await send_event(socket, "shopper.exit_intent", {"trigger": "mouse_leave"})
    second = await send_event(socket, "shopper.exit_intent", {"trigger": "idle"})
    assert [f["type"] for f in first] == ["offer", "appended"]
    assert [f["type"] for f in second] == ["appended"]
    reasons = [
        d["reason"]
        for t, d in await log_types(s["store"].pk, "cart-c")
        if t.startswith("recovery.")
    ]
    assert reasons == ["eligible", "cooldown"]
    await socket.disconnect()


async def test_no_offer_after_the_order(committed_db):
    s = await shop()
    socket = await hello(s["store"].pk, "cart-o")
    await send_event(socket, "cart.item_added", item())
    # The order comes from the shop's server (a browser may not send one).
    await sync_to_async(events_append)(
        store_id=s["store"].pk,
        events=[
            new_event(
                "order.placed", "cart-o", {"order_id": "o-1", "total": 1000, "currency": "EUR"}
            )
        ],
        source=Source.server("test"),
    )
    frames = await send_event(socket, "shopper.exit_intent", {"trigger": "mouse_leave"})
    assert [f["type"] for f in frames] == ["appended"]
    assert (await log_types(s["store"].pk, "cart-o"))[-1][1]["reason"] == "converted"
    await socket.disconnect()


async def test_no_campaign_and_empty_cart_are_recorded_reasons(committed_db):
    s = await shop()
    socket = await hello(s["store"].pk, "cart-e")
    await send_event(socket, "page.viewed", {"url": "/", "page_type": "home"})
    await send_event(socket, "shopper.exit_intent", {"trigger": "scroll_up"})
    assert (await log_types(s["store"].pk, "cart-e"))[-1][1]["reason"] == "empty_cart"
    await sync_to_async(Campaign.objects.filter(pk=s["campaign"].pk).update)(active=False)
    await send_event(socket, "cart.item_added", item())
    await send_event(socket, "shopper.exit_intent", {"trigger": "scroll_up"})
    assert (await log_types(s["store"].pk, "cart-e"))[-1][1]["reason"] == "no_campaign"
    await socket.disconnect()


async def test_unacked_offers_come_back_on_reconnect_and_over_http(committed_db):
    s = await shop()
    store_id = s["store"].pk
    cart = cart_tokens.cart_token_mint(store_id=store_id)  # a cart the browser minted
    socket = await hello(store_id, cart)
    await send_event(socket, "cart.item_added", item())
    offer = (await send_event(socket, "shopper.exit_intent", {"trigger": "mouse_leave"}))[0]
    await socket.disconnect()  # dropped before the browser acked

    client = Client()
    url = "/api/v1/shopper-sessions/offers"
    query = {"publishable_key": s["creds"].publishable_key, "cart": cart}
    pending = await sync_to_async(client.get)(url, query, HTTP_ORIGIN=ORIGIN)
    assert pending.status_code == 200
    assert [o["id"] for o in pending.json()["offers"]] == [offer["id"]]

    again = await connect()
    ticket = tickets.ticket_issue(store_id=store_id, cart=cart)
    await again.send_json_to({"type": "hello", "ticket": ticket})
    assert (await again.receive_json_from(timeout=5))["type"] == "welcome"
    resent = await again.receive_json_from(timeout=5)
    assert resent["type"] == "offer" and resent["id"] == offer["id"]
    await again.send_json_to({"type": "ack", "offer": offer["id"]})
    await again.send_json_to({"type": "offer.accepted", "offer": offer["id"]})
    await again.send_json_to({"type": "ping"})
    assert (await again.receive_json_from(timeout=5))["type"] == "pong"  # the acks were handled
    await again.disconnect()

    log = [t for t, _ in await log_types(store_id, cart)]
    assert log[-2:] == ["recovery.offer_decided", "recovery.offer_accepted"]  # acks: off the log
    pending = await sync_to_async(client.get)(url, query, HTTP_ORIGIN=ORIGIN)
    assert pending.json()["offers"] == []
    third = await hello(store_id, cart)
    assert await third.receive_nothing(timeout=0.3)  # nothing pending any more
    await third.disconnect()


async def test_a_push_from_another_process_reaches_the_carts_socket(committed_db):
    s = await shop()
    socket = await hello(s["store"].pk, "cart-p")
    offer = {"id": "pushed-1", "kind": "message", "headline": "Still there?", "body": "x"}
    await live.offer_push_async(store_id=s["store"].pk, cart="cart-p", offer=offer)
    frame = await socket.receive_json_from(timeout=5)
    assert frame == {"type": "offer", **offer}
    await socket.disconnect()


@pytest.mark.parametrize(
    ("make", "code"),
    [
        ("forged", 4401),
        ("expired", 4402),
        ("reused", 4409),
        ("cross_store", 4406),
        ("not_json", 4400),
        ("no_ticket", 4400),
    ],
)
async def test_ticket_rules_have_distinct_close_codes(committed_db, monkeypatch, make, code):
    s = await shop()
    other = await shop(origin="http://other.test")
    store_id = s["store"].pk
    ticket = tickets.ticket_issue(store_id=store_id, cart="cart-t")
    origin = ORIGIN
    first: object = {"type": "hello", "ticket": ticket}
    if make == "forged":
        first = {"type": "hello", "ticket": ticket[:-2] + ("AA" if ticket[-2:] != "AA" else "BB")}
    elif make == "expired":
        monkeypatch.setattr(tickets, "TTL_SECONDS", -1)
    elif make == "reused":
        used = await hello(store_id, "cart-t")
        await used.disconnect()
        first = {"type": "hello", "ticket": tickets.ticket_issue(store_id=store_id, cart="x")}
        # spend this one first
        spend = await connect()
        await spend.send_json_to(first)
        assert (await spend.receive_json_from(timeout=5))["type"] == "welcome"
        await spend.disconnect()
    elif make == "cross_store":
        origin = "http://other.test"  # allowed, but for the other store
        assert other["store"].allowed_origins == ["http://other.test"]
    elif make == "no_ticket":
        first = {"type": "hello"}
    communicator = await connect(origin)
    if make == "not_json":
        await communicator.send_to(text_data="hello?")
    else:
        await communicator.send_json_to(first)
    output = await communicator.receive_output(timeout=5)
    await communicator.disconnect()  # end the application instance, or the loop waits for it
    assert output == {"type": "websocket.close", "code": code}


async def test_unknown_origin_is_refused_at_the_handshake(committed_db):
    await shop()
    for origin in ("http://evil.test", None):
        communicator = await connect(origin)
        output = await communicator.receive_output(timeout=5)
        await communicator.disconnect()  # end the application instance, or the loop waits for it
        assert output == {"type": "websocket.close", "code": 4403}


async def test_bad_messages_get_errors_and_the_connection_keeps_working(committed_db):
    s = await shop()
    socket = await hello(s["store"].pk, "cart-b")

    async def answer(text: str) -> dict:
        await socket.send_to(text_data=text)
        return await socket.receive_json_from(timeout=5)

    assert (await answer("not json"))["code"] == "invalid_json"
    assert (await answer('["a list"]'))["code"] == "invalid_message"
    assert (await answer('{"type": "dance"}'))["code"] == "unknown_type"
    assert (await answer(json.dumps({"type": "ping", "pad": "x" * 20000})))["code"] == "too_large"
    bad = await answer(json.dumps(ev("cart.item_added", {"sku": "A", "quantity": -1})))
    assert bad["code"] == "invalid_event" and "data" in bad["errors"]
    system = await answer(json.dumps(ev("recovery.offer_decided", {})))
    assert system["code"] == "invalid_event"
    unknown_offer = await answer(json.dumps({"type": "offer.shown", "offer": "nope"}))
    assert unknown_offer["code"] == "invalid_message"
    assert (await answer(json.dumps({"type": "ack", "offer": 5})))["code"] == "invalid_message"
    # The cart is intact and the socket still works.
    assert (await send_event(socket, "cart.item_added", item()))[0]["version"] == 1
    assert [t for t, _ in await log_types(s["store"].pk, "cart-b")] == ["cart.item_added"]
    await socket.disconnect()


async def test_the_cart_comes_from_the_ticket_not_the_message(committed_db):
    s = await shop()
    socket = await hello(s["store"].pk, "mine")
    message = ev("cart.item_added", item())
    message["event"]["cart"] = "someone-elses"
    await socket.send_json_to(message)
    assert (await socket.receive_json_from(timeout=5))["type"] == "appended"
    assert len(await log_types(s["store"].pk, "mine")) == 1
    assert await log_types(s["store"].pk, "someone-elses") == []
    await socket.disconnect()


async def test_mass_disconnect_does_not_fail(committed_db):
    s = await shop()
    sockets = await asyncio.gather(*(hello(s["store"].pk, f"m-{n}") for n in range(200)))
    await asyncio.gather(*(socket.disconnect() for socket in sockets))
    # After the storm, a new socket still connects and gets pushes.
    socket = await hello(s["store"].pk, "after")
    await live.offer_push_async(store_id=s["store"].pk, cart="after", offer={"id": "x"})
    assert (await socket.receive_json_from(timeout=5))["id"] == "x"
    await socket.disconnect()


async def test_an_offer_sent_before_a_failed_commit_is_withdrawn(committed_db, monkeypatch):
    from django.db import OperationalError

    from carts import append

    s = await shop()
    socket = await hello(s["store"].pk, "cart-w")
    await send_event(socket, "cart.item_added", item())

    def broken(*args, **kwargs):
        raise OperationalError("the database went away")

    monkeypatch.setattr(append, "cart_states_update", broken)
    await socket.send_json_to(ev("shopper.exit_intent", {"trigger": "mouse_leave"}))
    offer = await socket.receive_json_from(timeout=5)
    withdrawn = await socket.receive_json_from(timeout=5)
    error = await socket.receive_json_from(timeout=5)
    assert offer["type"] == "offer"
    assert withdrawn == {"type": "offer.withdrawn", "id": offer["id"]}
    assert error["type"] == "error" and error["code"] == "unavailable"
    assert [t for t, _ in await log_types(s["store"].pk, "cart-w")] == ["cart.item_added"]

    monkeypatch.undo()  # the socket still works once the database is back
    frames = await send_event(socket, "shopper.exit_intent", {"trigger": "mouse_leave"})
    assert [f["type"] for f in frames] == ["offer", "appended"]
    await socket.disconnect()


async def test_an_idle_socket_stays_open(committed_db):
    """The channel layer's blocking Redis read lasts 5 s; a socket timeout at or below that
    (redis-py 8's default) used to kill every idle consumer after ~5 s."""
    s = await shop()
    socket = await hello(s["store"].pk, "idle")
    await asyncio.sleep(6.5)
    await socket.send_json_to({"type": "ping"})
    assert (await socket.receive_json_from(timeout=5))["type"] == "pong"
    await live.offer_push_async(store_id=s["store"].pk, cart="idle", offer={"id": "late"})
    assert (await socket.receive_json_from(timeout=5))["id"] == "late"
    await socket.disconnect()


def _session(creds, body: dict):
    return Client().post(
        "/api/v1/shopper-sessions",
        {"publishable_key": creds.publishable_key, **body},
        content_type="application/json",
        headers={"Origin": ORIGIN},
    )


async def test_the_browser_writes_to_a_server_made_cart_only_with_the_servers_grant(committed_db):
    """Security review 2, finding 3: the publishable key gets no ticket for a cart the shop's
    server made; with the server's grant it does, and the socket appends to that cart."""
    s = await shop()
    store_id, creds = s["store"].pk, s["creds"]
    auth = {"Authorization": f"Bearer {creds.secret_key}"}
    made = await sync_to_async(Client().post)(
        "/api/v1/events",
        {**ev("cart.item_added", item())["event"], "cart": "order-77"},
        content_type="application/json",
        headers=auth,
    )
    assert made.status_code == 201

    refused = await sync_to_async(_session)(creds, {"cart": "order-77"})
    assert refused.status_code == 403 and refused.json()["code"] == "cart_not_allowed"

    grant = await sync_to_async(Client().post)("/api/v1/carts/order-77/browser-grant", headers=auth)
    opened = await sync_to_async(_session)(
        creds, {"cart": "order-77", "grant": grant.json()["grant"]}
    )
    assert opened.status_code == 201
    socket = await connect()
    await socket.send_json_to({"type": "hello", "ticket": opened.json()["ticket"]})
    assert (await socket.receive_json_from(timeout=5))["cart"] == "order-77"
    [answer] = await send_event(socket, "checkout.started")
    assert answer["type"] == "appended" and answer["version"] == 2
    await socket.disconnect()
    assert [t for t, _ in await log_types(store_id, "order-77")] == [
        "cart.item_added",
        "checkout.started",
    ]
