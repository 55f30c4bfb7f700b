"""The cooldown of offers with a code, per device as well as per shopper and client address
(issue 13): the shopper session issues a signed device token, the ticket carries its id, the
websocket passes it to the decision; and the cooldown's Redis keys are keyed digests (HMAC), not
plain hashes of the address."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.core import signing
from django.test import Client

from campaigns.models import Coupon
from carts import redis_client
from carts.models import Store
from carts.services import store_create, store_origins_add
from config.asgi import application
from recovery import live, serving, tickets
from tests.conftest import item
from tests.recovery.test_onsite_coupons import ORIGIN, T, decided, make_shop, offer_of, raw


@pytest.fixture(autouse=True)
def fresh_caches(settings):
    settings.RECOVERY_MODEL_REFRESH_SECONDS = 0
    settings.RECOVERY_CAMPAIGN_REFRESH_SECONDS = 0
    serving.MODELS.clear()
    live.onsite_tiers_forget()
    yield


def session(publishable_key: str, **body: str):
    return Client().post(
        "/api/v1/shopper-sessions",
        {"publishable_key": publishable_key, **body},
        content_type="application/json",
        headers={"Origin": ORIGIN},
    )


def exit_intent(
    store_id: int, cart: str, *, ip: str, device: str | None, at: datetime = T
) -> live.EventOutcome:
    """A browser cart with one line, then its exit intent, as the socket of ``device`` (a device
    id, as the ticket carries it) at client address ``ip`` sends them."""
    for kind, data in (
        ("cart.item_added", item(unit_price=5000)),
        ("shopper.exit_intent", {"trigger": "mouse_leave"}),
    ):
        outcome = live.shopper_event_append(
            store_id=store_id,
            cart=cart,
            raw=raw(kind, data, at=at),
            now=at,
            session="s",
            client_ip=ip,
            device=device,
        )
    return outcome


# The device token --------------------------------------------------------------------------------


@pytest.fixture
def shop(db):
    creds = store_create(name="Device shop")
    store = Store.objects.get(pk=creds.store_id)
    store_origins_add(store=store, origins=[ORIGIN])
    return store, creds


def test_the_session_answer_carries_a_device_token_the_ticket_names(shop):
    store, creds = shop
    response = session(creds.publishable_key)
    assert response.status_code == 201, response.json()
    body = response.json()
    device = tickets.device_read(store_id=store.pk, token=body["device"])
    assert device is not None and len(device) >= 22  # 128 random bits
    assert len(body["device"]) <= tickets.DEVICE_TOKEN_MAX_LENGTH
    assert tickets.ticket_read(body["ticket"]).device == device
    # sent back, the device keeps its id (and its token), on a new cart or on the same one
    again = session(creds.publishable_key, device=body["device"]).json()
    same_cart = session(creds.publishable_key, cart=body["cart"], device=body["device"]).json()
    for answer in (again, same_cart):
        assert answer["device"] == body["device"]
        assert tickets.ticket_read(answer["ticket"]).device == device
    # another browser gets another device
    other = session(creds.publishable_key).json()
    assert tickets.device_read(store_id=store.pk, token=other["device"]) not in (None, device)


def _forged(store_id: int, genuine: str) -> list[str]:
    value, signature = genuine.rsplit(":", 1)
    other_store = tickets.device_token_issue(store_id=store_id + 1, device="A" * 22)
    wrong_key = signing.Signer(key="not-the-key", salt=tickets.DEVICE_SALT).sign_object(
        {"s": store_id, "d": "B" * 22}
    )
    unsalted = signing.Signer(key=tickets._keys()[0]).sign_object({"s": store_id, "d": "C" * 22})
    return [
        "garbage",
        "   ",
        ":",
        "é" * 128,
        f"{value}:{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",  # tampered signature
        f"{value}x:{signature}",
        other_store,  # another store's genuine token
        wrong_key,
        unsalted,  # a ticket-key signature of another kind (not the device salt)
        tickets.ticket_issue(store_id=store_id, cart="c1", device="D" * 22)[:128],
    ]


def test_a_forged_or_garbage_device_token_is_ignored_and_a_new_one_issued(shop):
    store, creds = shop
    genuine = session(creds.publishable_key).json()["device"]
    known = tickets.device_read(store_id=store.pk, token=genuine)
    for forged in _forged(store.pk, genuine):
        response = session(creds.publishable_key, device=forged)
        assert response.status_code == 201, (forged, response.json())
        body = response.json()
        device = tickets.device_read(store_id=store.pk, token=body["device"])
        assert device is not None and device != known, forged
        assert body["device"] != forged
        assert device not in ("A" * 22, "B" * 22, "C" * 22, "D" * 22)
        assert tickets.ticket_read(body["ticket"]).device == device


@pytest.mark.parametrize(
    ("device", "message"),
    [("x" * 129, "Ensure this field has no more than 128 characters."),
     ("", "This field may not be blank."),
     ("a\x00b", "This value does not match the required pattern.")],
)  # fmt: skip
def test_a_device_token_out_of_its_documented_bounds_is_a_400(shop, device, message):
    _, creds = shop
    response = session(creds.publishable_key, device=device)
    assert response.status_code == 400
    assert message in str(response.json()["device"])


def test_a_ticket_made_without_a_device_has_none():
    claims = tickets.ticket_read(tickets.ticket_issue(store_id=1, cart="c1"))
    assert claims.device is None


def test_the_schema_documents_the_device_fields_and_their_bounds(db):
    schema = Client().get("/api/schema/?format=json").json()["components"]["schemas"]
    given = schema["_SessionIn"]["properties"]["device"]
    answered = schema["SessionOut"]["properties"]["device"]
    assert given["maxLength"] == answered["maxLength"] == tickets.DEVICE_TOKEN_MAX_LENGTH
    assert given["minLength"] == 1
    assert re.search(given["pattern"], "any text") and not re.search(given["pattern"], "a\x00")
    assert given["type"] == answered["type"] == "string"
    assert "device" not in schema["_SessionIn"].get("required", [])
    assert "device" in schema["SessionOut"]["required"]


# The cooldown per device -------------------------------------------------------------------------


def test_one_new_code_per_device_whatever_its_address(committed_db):
    s = make_shop()
    store_id = s["store"].pk
    device, other = tickets.device_new(), tickets.device_new()
    first = exit_intent(store_id, "dev-1", ip="192.0.2.10", device=device)
    second = exit_intent(store_id, "dev-2", ip="192.0.2.11", device=device)  # no shopper id
    elsewhere = exit_intent(store_id, "dev-3", ip="192.0.2.12", device=other)

    assert "discount_code" in offer_of(first) and "discount_code" in offer_of(elsewhere)
    assert second.decision is not None
    assert (second.decision.decision, second.decision.reason) == ("offer", "cooldown_device")
    assert "discount_code" not in offer_of(second) and offer_of(second)["kind"] == "message"
    assert decided(store_id, "dev-2")[0]["reason"] == "cooldown_device"
    assert Coupon.objects.filter(store_id=store_id).count() == 2
    # after the cooldown (an hour: the tier says 0) the device may get a code again
    later = exit_intent(
        store_id, "dev-4", ip="192.0.2.13", device=device, at=T + timedelta(minutes=61)
    )
    assert "discount_code" in offer_of(later)


async def _socket(ticket: str, ip: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        application, "/ws/v1/shopper/", headers=[(b"origin", ORIGIN.encode())]
    )
    communicator.scope["client"] = (ip, 50_000)
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "hello", "ticket": ticket})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "welcome"
    return communicator


async def _send(communicator: WebsocketCommunicator, kind: str, data: dict) -> list[dict]:
    await communicator.send_json_to({"type": "event", "event": raw(kind, data, datetime.now(UTC))})
    frames = [await communicator.receive_json_from(timeout=5)]
    while frames[-1]["type"] not in ("appended", "error"):
        frames.append(await communicator.receive_json_from(timeout=5))
    return frames


@pytest.mark.asyncio
async def test_a_device_token_kept_by_the_browser_holds_its_cooldown_across_addresses(
    committed_db,
):
    # Session API -> ticket -> websocket -> decision: the second cart of the browser, from
    # another address, gets an offer without a code.
    s = await sync_to_async(make_shop)()
    store_id, key = s["store"].pk, s["creds"].publishable_key
    kept: dict[str, str] = {}  # the browser's localStorage
    offers = []
    for ip in ("198.18.1.1", "198.18.2.2"):
        body = await sync_to_async(session)(key, **kept)
        assert body.status_code == 201
        kept["device"] = body.json()["device"]
        socket = await _socket(body.json()["ticket"], ip)
        await _send(socket, "cart.item_added", item(unit_price=5000))
        frames = await _send(socket, "shopper.exit_intent", {"trigger": "mouse_leave"})
        offers.append((body.json()["cart"], frames[0]))
        await socket.disconnect()
    (_, first), (second_cart, second) = offers
    assert [first["type"], second["type"]] == ["offer", "offer"]
    assert "discount_code" in first and "discount_code" not in second
    reason = await sync_to_async(lambda: decided(store_id, second_cart)[0]["reason"])()
    assert reason == "cooldown_device"


# Keyed digests -----------------------------------------------------------------------------------


def _cooldown_keys(store_id: int) -> list[str]:
    found = redis_client.client().scan_iter(match=f"recovery:cooldown:{store_id}.*", count=1000)
    return sorted(k.decode() if isinstance(k, bytes) else k for k in found)


def test_the_cooldown_keys_are_keyed_digests_not_plain_hashes(committed_db, settings):
    s = make_shop()
    store_id = s["store"].pk
    ip, device = "203.0.113.77", tickets.device_new()
    exit_intent(store_id, "kd-1", ip=ip, device=device)

    keys = _cooldown_keys(store_id)
    assert [k.split(":")[3] for k in keys] == ["device", "ip"]
    digests = [k.rsplit(":", 1)[1] for k in keys]
    for clear in (ip, device):
        plain = hashlib.sha256(clear.encode()).hexdigest()
        assert not any(plain[:32] in k or clear in k for k in keys)
    assert digests == [live._cooldown_digest("device", device), live._cooldown_digest("ip", ip)]
    # keyed by the SECRET_KEY: another key, another digest
    settings.SECRET_KEY = "another-secret-key-for-this-test-only-0123456789"
    assert live._cooldown_digest("ip", ip) != digests[1]
