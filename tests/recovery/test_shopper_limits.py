"""Rate limits on the shopper-facing surfaces (security review 2, finding 5), against the real
Redis: shopper sessions per client IP and per store, pending offers per client IP, websocket
connections per client IP and messages per socket. Each is hit, answered as documented (429 with
Retry-After; an error frame and close code 4429) and lifts after its window."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from carts.models import CartEvent
from config.asgi import application
from recovery import cart_tokens, tickets
from tests.conftest import item
from tests.recovery.test_shopper_socket import (  # noqa: F401 (fresh_caches: an autouse fixture)
    ORIGIN,
    ev,
    fresh_caches,
    make_shop,
    shop,
)

SESSIONS = "/api/v1/shopper-sessions"
OFFERS = "/api/v1/shopper-sessions/offers"


def _ip() -> str:
    """A client address of this test's own: the counts live in the Redis the whole run shares."""
    return "10." + ".".join(str(b) for b in secrets.token_bytes(3))


def _limit(settings, name: str, rule: str) -> None:
    settings.RATE_LIMITS = {**settings.RATE_LIMITS, name: rule}


def _session(creds, ip: str):
    return Client(REMOTE_ADDR=ip).post(
        SESSIONS,
        {"publishable_key": creds.publishable_key},
        content_type="application/json",
        headers={"Origin": ORIGIN},
    )


def _refused_as_documented(response, limit: str) -> int:
    """A 429 as docs/websocket.md says; its Retry-After, in seconds."""
    assert response.status_code == 429
    retry = int(response["Retry-After"])
    assert 1 <= retry <= 2
    assert response.json() == {
        "code": "rate_limited",
        "detail": f"Too many requests; try again in {retry} s.",
        "limit": limit,
    }
    assert response["Access-Control-Allow-Origin"] == ORIGIN  # readable by the storefront
    return retry


# HTTP -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_shopper_sessions_are_limited_per_client_ip(settings):
    _limit(settings, "shopper_session_ip", "3/second")
    creds = make_shop()["creds"]
    ip = _ip()

    answers = [_session(creds, ip) for _ in range(4)]

    assert [r.status_code for r in answers] == [201, 201, 201, 429]
    retry = _refused_as_documented(answers[3], "shopper_session_ip")
    assert "ticket" not in answers[3].json()
    assert _session(creds, _ip()).status_code == 201  # another client has its own count
    time.sleep(retry + 0.2)
    assert _session(creds, ip).status_code == 201  # lifted after Retry-After


@pytest.mark.django_db
def test_refused_requests_count_against_the_client_ip_too(settings):
    _limit(settings, "shopper_session_ip", "3/second")
    creds = make_shop()["creds"]
    ip = _ip()
    bad = Client(REMOTE_ADDR=ip)
    for _ in range(3):
        answer = bad.post(SESSIONS, {"publishable_key": "pk_nope"}, content_type="application/json")
        assert answer.status_code == 401

    _refused_as_documented(
        Client(REMOTE_ADDR=ip).post(
            SESSIONS,
            {"publishable_key": creds.publishable_key},
            content_type="application/json",
            headers={"Origin": ORIGIN},
        ),
        "shopper_session_ip",
    )


@pytest.mark.django_db
def test_shopper_sessions_are_limited_per_store(settings):
    _limit(settings, "shopper_session_store", "3/second")
    creds, other = make_shop()["creds"], make_shop()["creds"]

    answers = [_session(creds, _ip()) for _ in range(4)]  # four clients, one store

    assert [r.status_code for r in answers] == [201, 201, 201, 429]
    retry = _refused_as_documented(answers[3], "shopper_session_store")
    assert _session(other, _ip()).status_code == 201  # another store has its own count
    time.sleep(retry + 0.2)
    assert _session(creds, _ip()).status_code == 201


@pytest.mark.django_db
def test_pending_offers_are_limited_per_client_ip(settings):
    _limit(settings, "offers_ip", "3/second")
    s = make_shop()
    query = {
        "publishable_key": s["creds"].publishable_key,
        "cart": cart_tokens.cart_token_mint(store_id=s["store"].pk),
    }
    ip = _ip()

    def get(client_ip: str):
        return Client(REMOTE_ADDR=client_ip).get(OFFERS, query, headers={"Origin": ORIGIN})

    answers = [get(ip) for _ in range(4)]

    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert answers[0].json() == {"offers": []}
    retry = _refused_as_documented(answers[3], "offers_ip")
    assert get(_ip()).status_code == 200
    time.sleep(retry + 0.2)
    assert get(ip).status_code == 200


@pytest.mark.django_db
def test_the_429_is_in_the_schema():
    from drf_spectacular.generators import SchemaGenerator

    paths = SchemaGenerator().get_schema(request=None, public=True)["paths"]
    assert "429" in paths[SESSIONS]["post"]["responses"]
    assert "429" in paths[OFFERS]["get"]["responses"]


# The websocket --------------------------------------------------------------------------------


async def _connect(ip: str) -> WebsocketCommunicator:
    # Behind one trusted proxy (RATE_LIMIT_PROXY_HOPS = 1): the client is X-Forwarded-For's last.
    headers = [(b"origin", ORIGIN.encode()), (b"x-forwarded-for", ip.encode())]
    communicator = WebsocketCommunicator(application, "/ws/v1/shopper/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def _welcomed(communicator: WebsocketCommunicator, store_id: int, cart: str) -> None:
    ticket = tickets.ticket_issue(store_id=store_id, cart=cart)
    await communicator.send_json_to({"type": "hello", "ticket": ticket})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "welcome"


async def _closed_with(communicator: WebsocketCommunicator, code: int) -> None:
    output = await communicator.receive_output(timeout=5)
    await communicator.disconnect()  # end the application instance, or the loop waits for it
    assert output == {"type": "websocket.close", "code": code}


async def _pong(communicator: WebsocketCommunicator) -> bool:
    await communicator.send_json_to({"type": "ping"})
    return (await communicator.receive_json_from(timeout=5))["type"] == "pong"


@pytest.mark.asyncio
async def test_websocket_connections_are_limited_per_client_ip(committed_db, settings):
    _limit(settings, "ws_connect_ip", "3/second")
    settings.RATE_LIMIT_PROXY_HOPS = 1
    store_id = (await shop())["store"].pk
    ip = _ip()

    sockets = [await _connect(ip) for _ in range(3)]
    fourth = await _connect(ip)

    await _closed_with(fourth, 4429)  # accepted, then closed at once with 4429
    for n, socket in enumerate(sockets):  # the first three work
        await _welcomed(socket, store_id, f"conn-{secrets.token_hex(4)}-{n}")
        await socket.disconnect()
    other = await _connect(_ip())  # another client has its own count
    await _welcomed(other, store_id, f"conn-{secrets.token_hex(4)}")
    await other.disconnect()
    await asyncio.sleep(2.2)  # the window has passed (a 1-second sliding window: at most 2 s)
    again = await _connect(ip)
    await _welcomed(again, store_id, f"conn-{secrets.token_hex(4)}")
    await again.disconnect()


@pytest.mark.asyncio
async def test_too_many_messages_on_a_socket_get_an_error_frame_and_close_4429(
    committed_db, settings
):
    _limit(settings, "ws_message_socket", "3/second")
    s = await shop()
    cart = f"msg-{secrets.token_hex(4)}"
    socket = await _connect(_ip())
    await _welcomed(socket, s["store"].pk, cart)  # the hello is message 1
    other = await _connect(_ip())
    await _welcomed(other, s["store"].pk, cart + "-other")
    assert await _pong(socket) and await _pong(socket)  # messages 2 and 3

    await socket.send_json_to(ev("cart.item_added", item()))  # message 4: over the limit

    frame = await socket.receive_json_from(timeout=5)
    retry = frame.pop("retry_after")
    assert 1 <= retry <= 2
    assert frame == {
        "type": "error",
        "code": "rate_limited",
        "message": f"Too many messages on this socket; it is closed (4429). Connect again in "
        f"{retry} s.",
        "limit": "ws_message_socket",
    }
    await _closed_with(socket, 4429)
    stored = await sync_to_async(CartEvent.objects.filter(cart=cart).count)()
    assert stored == 0  # the message over the limit was not handled
    assert await _pong(other) and await _pong(other)  # another socket has its own count
    await other.disconnect()


@pytest.mark.asyncio
async def test_a_socket_within_its_rate_is_never_closed(committed_db, settings):
    _limit(settings, "ws_message_socket", "3/second")
    s = await shop()
    socket = await _connect(_ip())
    await _welcomed(socket, s["store"].pk, f"msg-{secrets.token_hex(4)}")
    assert await _pong(socket) and await _pong(socket)  # three messages: at the limit

    await asyncio.sleep(2.2)  # the window has passed

    assert all([await _pong(socket), await _pong(socket), await _pong(socket)])
    await socket.disconnect()


@pytest.mark.asyncio
async def test_messages_per_socket_are_limited_per_minute_too(committed_db, settings):
    _limit(settings, "ws_message_socket_minute", "4/minute")
    s = await shop()
    socket = await _connect(_ip())
    await _welcomed(socket, s["store"].pk, f"msg-{secrets.token_hex(4)}")
    assert all([await _pong(socket), await _pong(socket), await _pong(socket)])

    await socket.send_json_to({"type": "ping"})

    frame = await socket.receive_json_from(timeout=5)
    assert (frame["type"], frame["code"], frame["limit"]) == (
        "error",
        "rate_limited",
        "ws_message_socket_minute",
    )
    assert 1 <= frame["retry_after"] <= 120
    await _closed_with(socket, 4429)
