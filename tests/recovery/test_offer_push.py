"""Campaign on-site offers are pushed from the log (recovery/offer_push.py), once committed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async as sync_to_async

from carts import projectors, services
from carts.models import CartEvent
from carts.sources import Source
from recovery import live, offer_push
from tests.recovery.test_shopper_socket import hello, shop

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _decided(
    *,
    reason: str = "campaign_step",
    step: int | None = 41,
    expires: datetime,
    recorded: datetime,
) -> CartEvent:
    offer = {
        "id": "o-1",
        "kind": "message",
        "headline": "Still there?",
        "expires_at": expires.isoformat(),
    }
    return CartEvent(
        store_id=7,
        cart="c-1",
        type=live.OFFER_DECIDED,
        data={"decision": "offer", "reason": reason, "step": step, "offer": offer},
        recorded_at=recorded,
    )


def test_only_recent_unexpired_campaign_offers_are_pushed():
    fresh = _decided(expires=NOW + timedelta(hours=1), recorded=NOW - timedelta(seconds=5))
    exit_intent = _decided(
        reason="eligible", step=None, expires=NOW + timedelta(hours=1), recorded=NOW
    )
    # A campaign's offer over the store's code budget: a plain reminder, still the step's offer.
    uncoded = _decided(reason="budget_codes", expires=NOW + timedelta(hours=1), recorded=NOW)
    expired = _decided(expires=NOW - timedelta(seconds=1), recorded=NOW)
    old = _decided(expires=NOW + timedelta(hours=1), recorded=NOW - timedelta(minutes=6))
    page = CartEvent(store_id=7, cart="c-1", type="page.viewed", data={}, recorded_at=NOW)

    pushed = offer_push.pushes_of([fresh, exit_intent, expired, old, page, uncoded], now=NOW)

    assert pushed == [
        (live.cart_group(7, "c-1"), {"type": "offer.push", "offer": fresh.data["offer"]}),
        (live.cart_group(7, "c-1"), {"type": "offer.push", "offer": uncoded.data["offer"]}),
    ]


@pytest.mark.asyncio
async def test_a_committed_campaign_offer_reaches_the_carts_socket(committed_db):
    s = await shop()
    store_id = s["store"].pk
    socket = await hello(store_id, "push-1")
    now = datetime.now(UTC)
    offer = {
        "id": uuid.uuid4().hex,
        "kind": "message",
        "headline": "Still there?",
        "expires_at": (now + timedelta(hours=1)).isoformat(),
    }
    event = services.NewEvent(
        event_id=uuid.uuid4(),
        cart="push-1",
        type=live.OFFER_DECIDED,
        schema_version=1,
        occurred_at=now,
        data={"decision": "offer", "reason": "campaign_step", "step": 41, "offer": offer},
    )
    await sync_to_async(services.events_append)(
        store_id=store_id, events=[event], source=Source.system("campaigns")
    )
    await sync_to_async(projectors.projector_catch_up)(name=offer_push.NAME)

    frame = await socket.receive_json_from(timeout=5)
    assert frame == {"type": "offer", **offer}
    await socket.disconnect()
