"""Fixtures for campaign tests: a real SMTP server on loopback that Django sends to, and carts
and steps as running a campaign leaves them (carts through the append service)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from campaigns.models import Campaign, Enrollment, Step, Tier
from carts import identity, services
from carts.models import CartState
from carts.sources import Source
from tests.conftest import new_event
from tests.smtp_sink import SmtpSink


@pytest.fixture
def smtp_sink(settings) -> Iterator[SmtpSink]:
    """An SMTP server on 127.0.0.1, with Django's SMTP backend pointed at it (plain, no auth)."""
    with SmtpSink() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = sink.host
        settings.EMAIL_PORT = sink.port
        settings.EMAIL_HOST_USER = ""
        settings.EMAIL_HOST_PASSWORD = ""
        settings.EMAIL_USE_TLS = False
        settings.EMAIL_USE_SSL = False
        settings.EMAIL_TIMEOUT = 10
        yield sink


# Carts and steps as running a campaign leaves them -----------------------------------------------

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)

TWO_ITEMS: list[dict[str, Any]] = [
    {
        "sku": "MUG-01",
        "name": "Mug & saucer <large>",
        "quantity": 2,
        "unit_price": 1299,
        "currency": "EUR",
        "category": "kitchen",
        "url": "https://shop.example/p/mug",
        "image_url": "https://shop.example/i/mug.jpg",
    },
    {
        "sku": "POUR/02",
        "name": "Pour-over kit",
        "quantity": 1,
        "unit_price": 3450,
        "currency": "EUR",
    },
]


def _shop_cart(
    store_id: int,
    token: str,
    *,
    email: str = "jane.doe@example.com",
    shopper_id: str | None = None,
    items: list[dict[str, Any]] | None = None,
    timezone: str = "Europe/Berlin",
) -> CartState:
    """A cart built from events: items added, then the contact (with email consent) captured."""
    added = [
        new_event(
            "cart.item_added",
            token,
            dict(line),
            at=T0 + timedelta(seconds=i),
            **({"shopper": {"id": shopper_id}} if shopper_id else {}),
        )
        for i, line in enumerate(TWO_ITEMS if items is None else items)
    ]
    contact = new_event(
        "checkout.contact_captured",
        token,
        {"email": email, "consent": {"email": True}, "timezone": timezone},
        at=T0 + timedelta(minutes=1),
    )
    services.events_append(
        store_id=store_id,
        events=[*added, contact],
        source=Source.server("test"),
        now=contact.occurred_at,  # recorded as it happened: an accurate clock, no delay
    )
    return CartState.objects.get(store_id=store_id, token=token)


def _campaign_step(
    cart: CartState,
    *,
    campaign: Campaign | None = None,
    channel: str = Tier.Channel.EMAIL,
    status: str = Step.Status.PENDING,
    **tier_fields: Any,
) -> Step:
    """A step of ``cart`` in ``campaign`` (a new active one by default) for a new tier, as the
    scheduler leaves it: enrolment and step rows, the shopper key of the cart."""
    if campaign is None:
        campaign = Campaign.objects.create(store_id=cart.store_id, name="Recover", active=True)
    position = campaign.tiers.count() + 1
    tier = Tier.objects.create(
        campaign=campaign,
        position=position,
        channel=channel,
        min_score=0.0,
        delay_minutes=60 * (position - 1),
        **tier_fields,
    )
    shopper = identity.cart_shopper_key(shopper_id=cart.shopper_id, email=cart.email) or ""
    enrollment, _ = Enrollment.objects.get_or_create(
        store_id=cart.store_id,
        cart=cart.token,
        defaults={
            "campaign": campaign,
            "shopper": shopper,
            "cart_value": cart.value,
            "currency": cart.currency,
            "abandoned_at": T0 + timedelta(minutes=31),
        },
    )
    return Step.objects.create(
        store_id=cart.store_id,
        cart=cart.token,
        enrollment=enrollment,
        tier=tier,
        channel=channel,
        shopper=shopper,
        due_at=T0 + timedelta(minutes=31 + tier.delay_minutes),
        status=status,
    )


# Builders only: a test asks for ``db`` (or ``committed_db``) itself.
@pytest.fixture
def shop_cart() -> Callable[..., CartState]:
    return _shop_cart


@pytest.fixture
def campaign_step() -> Callable[..., Step]:
    return _campaign_step
