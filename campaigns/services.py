"""Writes of the campaigns app."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import transaction

from campaigns.models import Campaign, CampaignSettings, Tier
from carts.models import Store

DEMO_CAMPAIGN_NAME = "Demo: exit-intent offer"


@transaction.atomic
def campaign_demo_ensure(*, store: Store) -> Campaign:
    """The demo store's active campaign: an on-site tier that offers to any cart with items
    (minimum score 0, no holdout), so a new user sees an offer at once; then an email an hour
    after the cart is abandoned and a discount code a day after (consent required)."""
    origin = next(iter(store.allowed_origins or []), "http://127.0.0.1:8000")
    CampaignSettings.objects.get_or_create(
        store=store,
        defaults={
            "email_from": f"{store.name} <shop@example.com>",
            "cart_url": f"{origin}/demo/?items={{items}}&code={{code}}",
        },
    )
    campaign, created = Campaign.objects.get_or_create(
        store=store,
        name=DEMO_CAMPAIGN_NAME,
        defaults={"active": True, "holdout_share": Decimal("0"), "priority": 0},
    )
    if created:
        Tier.objects.create(
            campaign=campaign,
            position=1,
            channel=Tier.Channel.ONSITE,
            min_score=0.0,
            min_cart_value=1,
            offer_kind=Tier.OfferKind.PERCENT_DISCOUNT,
            percent=10,
            discount_cap=2000,
            headline="Wait, 10% off your cart",
            body="Finish your order in the next 30 minutes and save 10% (up to 20.00).",
            cta_label="Use my discount",
            cta_url="",
            cooldown_hours=0,
            offer_ttl_minutes=30,
        )
        Tier.objects.create(
            campaign=campaign,
            position=2,
            channel=Tier.Channel.EMAIL,
            delay_minutes=60,
            min_score=0.0,
            subject_template="Your cart at {{ store_name }} is waiting",
        )
        Tier.objects.create(
            campaign=campaign,
            position=3,
            channel=Tier.Channel.DISCOUNT,
            delay_minutes=24 * 60,
            min_score=0.0,
            offer_kind=Tier.OfferKind.PERCENT_DISCOUNT,
            discount_min=5,
            discount_max=15,
            discount_cap=3000,
            subject_template="A discount for the cart you left at {{ store_name }}",
        )
    return campaign


def campaign_activate(*, campaign_id: int, now: datetime) -> bool:
    """Activate a campaign that has a tier (keeping its first activation time); False when it
    has none. Under the row's lock, so a concurrent tier deletion cannot slip in between."""
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign_id)
        if not Tier.objects.filter(campaign=campaign).exists():
            return False
        campaign.active = True
        if campaign.activated_at is None:
            campaign.activated_at = now
        campaign.save(update_fields=["active", "activated_at"])
    return True


_NOT_COPIED = {"id", "created_at", "activated_at", "enrolled_through"}


@transaction.atomic
def campaign_duplicate(*, campaign: Campaign) -> Campaign:
    """A paused copy of the campaign and its tiers, named "Copy of <name>"."""
    values = {
        field.attname: getattr(campaign, field.attname)
        for field in Campaign._meta.concrete_fields
        if field.name not in _NOT_COPIED
    }
    max_length = Campaign._meta.get_field("name").max_length or 200
    values.update(name=f"Copy of {campaign.name}"[:max_length], active=False)
    copy = Campaign.objects.create(**values)
    Tier.objects.bulk_create(
        Tier(
            **{
                field.attname: getattr(tier, field.attname)
                for field in Tier._meta.concrete_fields
                if field.name not in {"id", "campaign"}
            },
            campaign=copy,
        )
        for tier in Tier.objects.filter(campaign=campaign).order_by("position")
    )
    return copy


def campaigns_pause(*, campaign_ids: list[int]) -> int:
    """Pause campaigns: no new carts join; steps already scheduled still run their checks."""
    return Campaign.objects.filter(pk__in=campaign_ids).update(active=False)
