"""Test data for campaigns, made through the services: carts by appending events, campaigns as
a merchant would configure them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from campaigns import clock
from campaigns.models import Campaign, CampaignSettings, Tier
from carts import services
from carts.models import CartState
from carts.sources import Source
from tests.conftest import item, new_event


def cart_abandoned(
    store_id: int,
    *,
    at: datetime,
    token: str | None = None,
    email: str | None = "ana@example.com",
    consent: bool | None = True,
    timezone: str | None = None,
    value: int = 4500,
    sku: str = "SKU-1",
    category: str = "shoes",
    arrived: datetime | None = None,
) -> CartState:
    """A cart with one item whose last shopper activity was at ``at`` (contact captured last).

    The server records the events at ``arrived`` (campaign time; default ``at``: sent at once,
    by an accurate clock): the append's ``now`` is the server-clock instant of it."""
    token = token or f"c-{uuid.uuid4().hex[:10]}"
    events = [
        new_event(
            "cart.item_added",
            token,
            item(sku=sku, unit_price=value, category=category),
            at=at - timedelta(minutes=2),
        )
    ]
    if email is not None:
        contact: dict[str, Any] = {"email": email}
        if consent is not None:
            contact["consent"] = {"email": consent}
        if timezone is not None:
            contact["timezone"] = timezone
        events.append(new_event("checkout.contact_captured", token, contact, at=at))
    else:
        events.append(new_event("page.viewed", token, {"url": "/cart", "page_type": "cart"}, at=at))
    services.events_append(
        store_id=store_id,
        events=events,
        source=Source.server("test"),
        now=clock.server(at if arrived is None else arrived),
    )
    return CartState.objects.get(store_id=store_id, token=token)


def order_placed(store_id: int, token: str, *, at: datetime, total: int = 4500) -> None:
    services.events_append(
        source=Source.server("test"),
        store_id=store_id,
        events=[
            new_event(
                "order.placed",
                token,
                {"order_id": f"o-{token}", "total": total, "currency": "EUR"},
                at=at,
            )
        ],
        now=clock.server(at),
    )


def campaign_with_tiers(
    store_id: int,
    *,
    activated_at: datetime,
    tiers: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> Campaign:
    """An active campaign (no holdout, no quiet hours unless given) with the given tiers."""
    defaults: dict[str, Any] = {
        "name": "Recover",
        "active": True,
        "activated_at": activated_at,
        "holdout_share": 0,
        "inactivity_minutes": 30,
        "quiet_start": None,
        "quiet_end": None,
        "shopper_cap_hours": 0,
    }
    campaign = Campaign.objects.create(store_id=store_id, **{**defaults, **fields})
    for position, tier in enumerate(tiers or [{"channel": "email"}], start=1):
        Tier.objects.create(
            campaign=campaign,
            position=position,
            **{"min_score": 0.0, "delay_minutes": (position - 1) * 60, **tier},
        )
    CampaignSettings.objects.get_or_create(
        store_id=store_id, defaults={"email_from": "Shop <shop@example.com>"}
    )
    return campaign
