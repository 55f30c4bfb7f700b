"""Acks on the shopper websocket (security review 2, finding 9): a socket acks only offers it was
sent, an ack of any other id gets an error frame and stores nothing, and a cart keeps a bounded
number of acks in Redis."""

from __future__ import annotations

import secrets

import pytest

from carts import redis_client
from recovery import consumers, live
from tests.conftest import item
from tests.recovery.test_shopper_socket import (  # noqa: F401 (fresh_caches: an autouse fixture)
    fresh_caches,
    hello,
    send_event,
    shop,
)

pytestmark = [pytest.mark.asyncio]


def _cart() -> str:
    # Acks live in Redis for a week, under the store id and the cart: a cart of this test's own.
    return f"ack-{secrets.token_hex(6)}"


def _acked(store_id: int, cart: str) -> set[str]:
    members = redis_client.client().smembers(live._acked_key(store_id, cart))
    return {m.decode() if isinstance(m, bytes) else m for m in members}


async def _ack(socket, offer_id: str) -> dict:
    """Send an ack and a ping: the ack's answer (an error), or the pong when it has none."""
    await socket.send_json_to({"type": "ack", "offer": offer_id})
    await socket.send_json_to({"type": "ping"})
    frame = await socket.receive_json_from(timeout=5)
    if frame["type"] != "pong":
        assert (await socket.receive_json_from(timeout=5))["type"] == "pong"
    return frame


def _unknown(offer_id: str) -> dict:
    return {
        "type": "error",
        "code": "invalid_message",
        "message": f"No offer {offer_id!r} was sent on this socket.",
    }


async def test_an_ack_of_an_offer_never_sent_is_refused_and_stored_nowhere(committed_db):
    store_id, cart = (await shop())["store"].pk, _cart()
    socket = await hello(store_id, cart)

    answers = [await _ack(socket, f"made-up-{n}") for n in range(50)]

    assert answers == [_unknown(f"made-up-{n}") for n in range(50)]
    assert not redis_client.client().exists(live._acked_key(store_id, cart))
    await socket.disconnect()


async def test_an_offer_sent_on_another_socket_cannot_be_acked_here(committed_db):
    store_id, cart = (await shop())["store"].pk, _cart()
    first = await hello(store_id, cart)
    await send_event(first, "cart.item_added", item())
    offer = (await send_event(first, "shopper.exit_intent", {"trigger": "mouse_leave"}))[0]
    assert offer["type"] == "offer"
    assert (await _ack(first, offer["id"]))["type"] == "pong"  # sent here: kept
    assert _acked(store_id, cart) == {offer["id"]}

    second = await hello(store_id, cart)  # nothing pending: it was acked
    assert await second.receive_nothing(timeout=0.3)
    assert await _ack(second, offer["id"]) == _unknown(offer["id"])

    assert _acked(store_id, cart) == {offer["id"]}
    await first.disconnect()
    await second.disconnect()


async def test_pending_and_pushed_offers_are_sent_so_they_can_be_acked(committed_db):
    store_id, cart = (await shop())["store"].pk, _cart()
    first = await hello(store_id, cart)
    await send_event(first, "cart.item_added", item())
    offer = (await send_event(first, "shopper.exit_intent", {"trigger": "mouse_leave"}))[0]
    await first.disconnect()  # dropped before the ack

    again = await hello(store_id, cart)
    resent = await again.receive_json_from(timeout=5)  # pending: sent after the welcome
    assert resent["id"] == offer["id"]
    pushed = {"id": f"pushed-{secrets.token_hex(4)}", "kind": "message", "headline": "Hi"}
    await live.offer_push_async(store_id=store_id, cart=cart, offer=pushed)
    assert (await again.receive_json_from(timeout=5))["id"] == pushed["id"]

    assert (await _ack(again, offer["id"]))["type"] == "pong"
    assert (await _ack(again, pushed["id"]))["type"] == "pong"

    assert _acked(store_id, cart) == {offer["id"], pushed["id"]}
    await again.disconnect()


async def test_a_cart_keeps_at_most_acked_max_acks(committed_db, monkeypatch):
    monkeypatch.setattr(live, "ACKED_MAX", 3)
    store_id, cart = (await shop())["store"].pk, _cart()
    socket = await hello(store_id, cart)
    ids = [f"offer-{n}-{secrets.token_hex(3)}" for n in range(5)]
    for offer_id in ids:
        await live.offer_push_async(store_id=store_id, cart=cart, offer={"id": offer_id})
        assert (await socket.receive_json_from(timeout=5))["id"] == offer_id

    answers = [await _ack(socket, offer_id) for offer_id in ids]

    full = {
        "type": "error",
        "code": "invalid_message",
        "message": "This cart has 3 acknowledged offers, the most kept; answer the offer with "
        "offer.shown, offer.accepted or offer.dismissed instead.",
    }
    assert [a["type"] for a in answers[:3]] == ["pong"] * 3
    assert answers[3:] == [full, full]
    assert _acked(store_id, cart) == set(ids[:3])
    assert (await _ack(socket, ids[0]))["type"] == "pong"  # acking a kept one again is fine
    ttl = redis_client.client().ttl(live._acked_key(store_id, cart))
    assert 7 * 86400 - 60 < ttl <= 7 * 86400
    await socket.disconnect()


async def test_a_socket_remembers_only_the_latest_offers_it_sent(committed_db, monkeypatch):
    monkeypatch.setattr(consumers, "SENT_OFFERS_MAX", 2)
    store_id, cart = (await shop())["store"].pk, _cart()
    socket = await hello(store_id, cart)
    ids = [f"offer-{n}-{secrets.token_hex(3)}" for n in range(3)]
    for offer_id in ids:
        await live.offer_push_async(store_id=store_id, cart=cart, offer={"id": offer_id})
        assert (await socket.receive_json_from(timeout=5))["id"] == offer_id

    assert await _ack(socket, ids[0]) == _unknown(ids[0])  # forgotten: the oldest of three
    assert (await _ack(socket, ids[1]))["type"] == "pong"
    assert (await _ack(socket, ids[2]))["type"] == "pong"

    assert _acked(store_id, cart) == set(ids[1:])
    await socket.disconnect()
